"""Per-RM verdicts from intervals: does this RM over-optimise less than the dense proxy, beyond the noise?

A verdict word needs a confidence interval behind it. For each method (Best-of-N, PPO) the row's gold drop from its
peak is compared with the dense row's as a paired difference (`umm_ray.report.uncertainty`): MITIGATES when the 95%
interval of (drop - dense drop) lies below 0, WORSENS when above, otherwise "no significant difference" with the
interval. When the dense proxy itself shows no significant drop on a method there is nothing to mitigate there, and
the line says so instead; likewise when the dense PPO gold's rise from its start is within the noise (its rise
interval reaches 0): there is no resolved gain to over-optimise, and PPO is not graded on it. The line calls that a
collapse only when the gold never went above its start (rise 0); a rise that is there but unresolved is called that.
PPO curves are smoothed (centred moving average over ~1/8 of the points) before the peak is taken, so one noisy step
is not a peak.
"""

from __future__ import annotations

import numpy as np

from umm_ray.algo.stats import Interval, significance_word
from umm_ray.report.fits import OveroptSummary, overopt_summary
from umm_ray.report.records import METHODS, RMResult
from umm_ray.report.uncertainty import RowStats, ppo_window

METHOD_NAMES = {"bon": "BoN", "ppo": "PPO", "ppo_kl": "PPO+KL"}


def fmt(x, digits: int = 3) -> str:
    """Numbers for tables: None -> '-', ints with thousands separators, floats with `digits` significant digits."""
    if x is None:
        return "-"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f"{int(x):,}"
    x = float(x)
    if not np.isfinite(x):
        return str(x)
    if abs(x) < 1e-12:  # floating-point dust (e.g. a drop of 1e-16) reads as zero
        return "0"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def fmt_ci(iv: Interval | None, point=None, digits: int = 3) -> str:
    """'0.559 [0.50, 0.61]' from an interval; the bare point value (or '-') when there is none."""
    if iv is None:
        return fmt(point, digits)
    return f"{fmt(iv.value, digits)} [{fmt(iv.lo, 2)}, {fmt(iv.hi, 2)}]"


def summarize(result: RMResult, method: str) -> OveroptSummary | None:
    """Over-optimisation summary of the RM's BoN (over n) or PPO / PPO+KL (over steps) curve; None without one."""
    c = result.curve(method)
    if c is None:
        return None
    if method == "bon":
        return overopt_summary(c.ns, c.kl, c.gold, c.proxy, 1, c.proxy_std, c.gold_std)
    return overopt_summary(c.steps, c.kl, c.gold, c.proxy, ppo_window(len(c.steps)), c.proxy_std0, c.gold_std0)


def _drop(stats: RowStats, method: str) -> Interval | None:
    block = stats.method(method)
    return block.get("drop") if block else None


def _rise(stats: RowStats, method: str) -> Interval | None:
    """The PPO gold's rise from its start to its peak (None for BoN, whose n = 1 start is the policy itself)."""
    block = stats.method(method)
    return block.get("rise") if block and method != "bon" else None


def never_rose(rise: Interval | None) -> bool:
    """Whether a PPO gold curve's rise to its peak is within the noise: the proxy gave no gold gain to over-optimise,
    so a drop from the 'peak' is the policy collapsing from the start (what a too-aggressive regime shows)."""
    return rise is not None and rise.lo <= 0


def _where(method: str, s: OveroptSummary) -> str:
    return f"n={int(s.peak_at)}" if method == "bon" else f"step {int(s.peak_at)}"


def describe_reference(method: str, s: OveroptSummary, drop: Interval | None, rise: Interval | None = None) -> str:
    """The dense proxy's own behaviour on one curve: did its gold rise first (PPO), and is its drop from the peak
    beyond the noise?"""
    head = (f"{METHOD_NAMES[method]}: gold peaks at {fmt(s.peak_gold)} ({_where(method, s)}, KL {fmt(s.kl_at_peak)}) "
            f"and ends at {fmt(s.final_gold)}, drop {fmt_ci(drop, s.drop_from_peak)}")
    if drop is None:
        return head + " (no interval: no per-seed data)"
    if never_rose(rise) and rise.value <= 0:
        return head + (f", but it never rose beyond its start (rise {fmt_ci(rise)}) while proxy gains "
                       f"{fmt(s.proxy_gain)} -> collapse, not over-optimisation after a gain")
    if never_rose(rise):  # it went up, by no more than the noise: neither a collapse nor a gain to over-optimise
        return head + (f", but its rise from the start is within the noise (rise {fmt_ci(rise)}) while proxy gains "
                       f"{fmt(s.proxy_gain)} -> no resolved gold gain, so its drop is not graded as over-optimisation")
    if drop.lo > 0:
        return head + f" while proxy gains {fmt(s.proxy_gain)} -> over-optimised"
    return head + " -> no significant over-optimisation"


def compare_to_reference(method: str, diffs: dict[str, Interval], ref_drop: Interval | None,
                         ref_rise: Interval | None = None) -> tuple[str, str]:
    """(text, word) for one method vs dense; word is 'M' (mitigates), 'W' (worsens), 'N' (no significant
    difference) or '' (nothing to grade: no interval, dense shows no significant drop here, or dense's PPO gold
    never rose, so the drops compare how fast policies collapse, not over-optimisation after a gain)."""
    name = METHOD_NAMES[method]
    drop, final = diffs.get(f"{method}_drop"), diffs.get("bon_gold_max" if method == "bon"
                                                              else f"{method}_final_gold")
    final_text = f"final gold vs dense {fmt_ci(final)}" if final else ""
    if method != "bon":
        matched = diffs.get(f"{method}_gold_at_kl")
        final_text += (f", gold at dense's peak KL vs dense {fmt_ci(matched)}" if matched else
                       ", never reaches the KL where dense peaks")
    if drop is None:
        return f"{name}: no interval for the difference", ""
    if never_rose(ref_rise) and ref_rise.value <= 0:
        return (f"{name}: dense's gold never rose here (rise {fmt_ci(ref_rise)}), so its drops measure collapse, not "
                f"over-optimisation; drop vs dense {fmt_ci(drop)}, {final_text}"), ""
    if never_rose(ref_rise):
        return (f"{name}: dense's gold rise is within the noise here (rise {fmt_ci(ref_rise)}), so no drop is graded; "
                f"drop vs dense {fmt_ci(drop)}, {final_text}"), ""
    if ref_drop is None or ref_drop.lo <= 0:
        return (f"{name}: dense shows no significant over-optimisation here (drop {fmt_ci(ref_drop)}); "
                f"drop vs dense {fmt_ci(drop)}, {final_text}"), ""
    word = significance_word(drop, lower_is_better=True)
    code = "M" if word.startswith("MITIGATES") else "W" if word.startswith("WORSENS") else "N"
    text = {"M": "mitigates", "W": "worsens", "N": "no significant difference"}[code]
    return f"{name}: gold drop vs dense {fmt_ci(drop)}, {final_text} -> {text}", code


def head_word(codes: dict[str, str]) -> str:
    """The verdict's first words from the graded methods (empty when none was graded)."""
    graded = {m: c for m, c in codes.items() if c}
    if not graded:
        return ""
    kinds = set(graded.values())
    if kinds == {"M"}:
        return "MITIGATES. "
    if kinds == {"W"}:
        return "WORSENS. "
    if kinds == {"N"}:
        return "NO SIGNIFICANT DIFFERENCE. "
    if kinds == {"M", "W"}:
        return "MIXED. "  # helps under one method, hurts under the other: say so rather than pick the kinder one
    sig = next(c for c in graded.values() if c != "N")
    where = " and ".join(METHOD_NAMES[m] for m, c in graded.items() if c == sig)
    return f"{'MITIGATES' if sig == 'M' else 'WORSENS'} under {where} only. "


def verdict(result: RMResult, dense: RMResult | None, stats: RowStats, dense_stats: RowStats | None) -> str:
    """One line per RM from its BoN and PPO intervals and their paired differences against the dense RM."""
    if result.kind == "gold":
        return "gold RM (the measuring stick, not a proxy)"
    parts, codes = [], {}
    for method in METHODS:
        s = summarize(result, method)
        if s is None:
            continue
        if dense is None or result is dense or dense_stats is None:
            parts.append(describe_reference(method, s, _drop(stats, method), _rise(stats, method)))
            continue
        text, codes[method] = compare_to_reference(method, stats.vs_dense or {}, _drop(dense_stats, method),
                                                   _rise(dense_stats, method))
        parts.append(text)
    acc = accuracy_vs_reference(stats.vs_dense or {})
    if not parts:
        return "no BoN or PPO curve" + (f"; {acc}" if acc else "")
    head = "reference. " if result is dense else head_word(codes)
    return head + "; ".join(parts + ([acc] if acc else []))


ACC_SPLITS = {"test": "test labels", "gold": "gold labels", "hh": "HH"}


def accuracy_vs_reference(diffs: dict[str, Interval]) -> str:
    """'accuracy vs dense on the same pairs: test labels 0.012 [...], ...' from the paired accuracy differences ('' if
    none); '(resolved)' marks those whose interval excludes 0."""
    found = {k: diffs[f"acc_{k}"] for k in ACC_SPLITS if f"acc_{k}" in diffs}
    if not found:
        return ""
    cells = ", ".join(f"{ACC_SPLITS[k]} {fmt_ci(d)}" + (" (resolved)" if d.excludes_zero() else "")
                      for k, d in found.items())
    return f"accuracy vs dense on the same pairs: {cells}"
