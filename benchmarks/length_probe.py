"""Length probe: does a dense proxy's taste for length, measured before PPO, tell which worlds PPO will hack early?

    python -m benchmarks.length_probe runs/worlds/world0 runs/worlds/world1 ... \\
        [--sweep runs/worlds/sweep/s80/ppo_sweep.json ...] [--rms dense,umm-4,ensemble-mean] \\
        [--out runs/bench/length_probe.json]

Per world directory (a testbed world as `benchmarks.ppo_sweep --sweep.worlds` builds it: `pairs/` and
`rm_dense/model`), on the SFT policy's own responses in the held-out pairs (test + val, chosen and rejected alike):
1. r(proxy, words) and r(gold, words): Pearson correlations of each score with the response's word count;
2. the proxy's length coefficient with the gold held fixed (least squares of z(proxy) on z(gold) and z(words));
3. the repetition probe: the mean change of each score when the response is said twice and three times over
   (`repeat`), in units of that score's standard deviation on the originals. The testbed gold penalises repetition,
   so a proxy that rewards it holds a direction PPO can climb while the gold falls.
4. two properties of the world's sampled pairs (`pairs/stats.json`), no proxy involved: `tie_share`, the share of the
   SFT policy's two samples per prompt that the gold could not order (equal scores or the same text: how little the
   policy varies), and `pair_margin`, the mean gold gap of the pairs it could (how much better one sample was).
With `--sweep` files (`ppo_sweep.json`), each world is joined to its stress-test run (kl_coef 0, or the grid's only
point) in `<base>/sweep/<name>/ppo_sweep.json` for `<base>/world<k>`, and the Spearman rank correlation of every probe
with the run's drop, rise and peak step is printed (for the dense proxy, the one the sweep runs PPO against).
`--rms` probes more of a compare job's RMs in each directory: `umm-<k>` (the merged UMM), `ensemble-<mean|wco|uwo>`.
docs/ppo-sweep.md has the run on sixteen world/proxy pairs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from umm_ray.data.jsonl import read_jsonl
from umm_ray.eval.rm_metrics import length_corr
from umm_ray.layout import RunLayout

Score = Callable[[list[str], list[str]], list[float]]
PROBES = ("r_proxy_len", "r_gold_len", "len_coef", "repeat2", "repeat3", "gold_repeat2", "gold_repeat3", "tie_share",
          "pair_margin")
OUTCOMES = ("drop", "rise", "peak_step")


def repeat(response: str, times: int) -> str:
    """`response` said `times` times, joined by commas (' red, blue.' x2 -> ' red, blue, red, blue.')."""
    if times < 1:
        raise ValueError(f"repeat: times must be >= 1, got {times}")
    head = response.rstrip().rstrip(".")
    return ",".join([head] * (times - 1) + [response])


def _z(a: np.ndarray) -> np.ndarray:
    sd = a.std()
    return (a - a.mean()) / sd if sd > 0 else a * 0.0


def probe(proxy: Score, gold: Score, prompts: list[str], responses: list[str]) -> dict[str, float]:
    """The probes above for one proxy on (prompt, response) rows; `proxy` and `gold` score lists of them."""
    if len(prompts) != len(responses) or len(prompts) < 3:
        raise ValueError(f"probe: need >= 3 (prompt, response) rows of equal count, got {len(prompts)} prompts and "
                         f"{len(responses)} responses")
    px, gd = np.asarray(proxy(prompts, responses), float), np.asarray(gold(prompts, responses), float)
    words = np.array([len(r.split()) for r in responses], float)
    design = np.stack([np.ones_like(words), _z(gd), _z(words)], 1)
    coef = np.linalg.lstsq(design, _z(px), rcond=None)[0]
    r_len = [length_corr(torch.from_numpy(x), responses) for x in (px, gd)]  # the report's column, same function
    out = {"n": len(responses), "r_proxy_len": float("nan") if r_len[0] is None else r_len[0],
           "r_gold_len": float("nan") if r_len[1] is None else r_len[1], "len_coef": float(coef[2])}
    for times in (2, 3):
        longer = [repeat(r, times) for r in responses]
        out[f"repeat{times}"] = float((np.asarray(proxy(prompts, longer)) - px).mean() / px.std())
        out[f"gold_repeat{times}"] = float((np.asarray(gold(prompts, longer)) - gd).mean() / gd.std())
    return out


def stress_outcomes(sweep_files: list[Path]) -> dict[Path, dict]:
    """World dir -> the summary of its stress-test run (kl_coef 0, or the grid's only point) in the sweep files."""
    out = {}
    for f in sweep_files:
        base = f.parent.parent.parent  # <base>/sweep/<name>/ppo_sweep.json
        for r in json.loads(f.read_text())["results"]:
            if r["world"] is None or float(r["point"].get("ppo.kl_coef", 0)) != 0:
                continue
            out.setdefault((base / f"world{r['world']}").resolve(), r["summary"])
    return out


def rank_correlations(rows: list[dict]) -> list[str]:
    """One line per (probe, outcome): Spearman's rho and its p-value over the rows that have the outcome."""
    rows = [r for r in rows if "drop" in r]
    if len(rows) < 4:
        return []
    lines = []
    for p in PROBES:
        xs = [r[p] for r in rows]
        if len(set(xs)) < 2:  # e.g. the gold's probes when every world shares one gold's answers: no ranking
            lines.append(f"- {p}: the same on every row, no rank correlation")
            continue
        for o in OUTCOMES:
            rho, pval = spearmanr(xs, [r[o] for r in rows])
            lines.append(f"- {p} vs {o}: rho {rho:+.2f} (p {pval:.3f}, n {len(rows)})")
    return lines


def table(rows: list[dict]) -> str:
    cols = ["world", "rm", *PROBES, *OUTCOMES, "shape_ok"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:+.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rm_path(world: Path, name: str) -> str:
    """Where the compare job put RM `name` in `world` (`RunLayout`): dense, umm-<k> (merged), ensemble-<aggregate>."""
    m = re.fullmatch(r"dense|umm-(\d+)|ensemble-(mean|wco|uwo)", name)
    if not m:
        raise SystemExit(f"length_probe --rms: {name!r} is not dense, umm-<k> or ensemble-<mean|wco|uwo>")
    layout = RunLayout(world)
    if m.group(1):
        return str(layout.rm_model("umm", int(m.group(1))))
    if m.group(2):
        return f"{layout.rm_model('ensemble')}#{m.group(2)}"
    return str(layout.rm_model("dense"))


def world_rows(world: Path) -> tuple[list[str], list[str]]:
    """The held-out pairs' prompts and responses (chosen and rejected), one row per response."""
    layout = RunLayout(world)
    files = [layout.pairs_test, layout.pairs_val]
    missing = [str(f) for f in files + [layout.rm_model("dense")] if not f.exists()]
    if missing:
        raise SystemExit(f"length_probe: {world} is not a built world (missing {missing})")
    pairs = [p for f in files for _, p in read_jsonl(f)]
    return [p["prompt"] for p in pairs for _ in (0, 1)], [r for p in pairs for r in (p["chosen"], p["rejected"])]


def pair_stats(world: Path) -> dict[str, float]:
    """The world's tie share and mean gold margin of its sampled pairs (item 4 above), from its pairs stage."""
    path = RunLayout(world).pairs / "stats.json"
    if not path.is_file():
        raise SystemExit(f"length_probe: {world} has no {path.relative_to(world)} (not a testbed world's pairs)")
    stats = json.loads(path.read_text())
    return {"tie_share": stats["n_ties"] / stats["n_in"], "pair_margin": float(stats["mean_abs_margin"])}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("worlds", nargs="+", type=Path, help="world directories (pairs/ and rm_dense/model inside)")
    ap.add_argument("--sweep", action="append", type=Path, default=[], help="ppo_sweep.json to join outcomes from")
    ap.add_argument("--rms", default="dense", help="comma-separated RMs to probe in each world (default: dense)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/length_probe.json"), help="JSON written here")
    args = ap.parse_args(argv)
    from umm_ray.actors.reward import RewardSpec, build_scorer
    from umm_ray.testbed.gold import TestbedGold

    outcomes, gold, rows = stress_outcomes(args.sweep), TestbedGold(), []
    for world in args.worlds:
        prompts, responses = world_rows(world)
        world_stats = pair_stats(world)
        for name in args.rms.split(","):
            proxy = build_scorer(RewardSpec.load(rm_path(world, name), name))
            row = {"world": str(world), "rm": name, **probe(proxy.score, gold.score, prompts, responses), **world_stats}
            if name == "dense" and world.resolve() in outcomes:  # the sweep ran PPO against the dense proxy
                s = outcomes[world.resolve()]
                row.update({o: s[o] for o in OUTCOMES}, shape_ok=s["shape_ok"])
            rows.append(row)
            print(f"{world} {name}: " + ", ".join(f"{k} {row[k]:+.3f}" for k in PROBES), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    print("\n".join(rank_correlations(rows)))
    return rows


if __name__ == "__main__":
    main()
