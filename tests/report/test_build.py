"""The comparison report: files written, images embedded, numbers and verdicts computed from the inputs."""

import base64
import json
import re

import numpy as np
import pytest

from tests.fixtures import bon_scores, ppo_curves
from tests.fixtures import report_row as row
from umm_ray.config import Config
from umm_ray.report import PPOCurve, RMResult, build_report, load_results, read_metrics


def results():
    """Four rows with per-seed data (2 seeds): dense over-optimises under BoN and PPO, umm-4 does not."""
    rng = np.random.default_rng(0)
    dense = row("dense", "dense", bon_scores(rng, hacked=True), ppo_curves(rng, 0.8), acc=[[1] * 71 + [0] * 29] * 2)
    dense.params, dense.throughput, dense.acc_testbed, dense.acc_hh, dense.forward_passes = 1234567, 250.0, 0.71, \
        0.55, 1
    dense.length_corr = 0.234
    umm = row("umm-4", "umm", bon_scores(rng, hacked=False), ppo_curves(rng, 0.0))
    umm.params, umm.acc_testbed = 1234567, 0.74
    ens = RMResult("ensemble-mean", "ensemble", params=4 * 1234567, throughput=60.0, acc_testbed=0.73,
                   ppo=ppo_curves(rng, 0.3, seeds=1)[0], notes="runs/x/ensemble.json#mean", forward_passes=4)
    bad = row("moe-4", "moe", bon_scores(rng, hacked=True), ppo_curves(rng, 1.5))
    return [dense, umm, ens, bad]


def test_build_report_writes_self_contained_html_and_markdown(tmp_path):
    res = results()
    html_path = build_report(res, Config(), tmp_path / "report", notes=["wall time 1 s"])
    out = html_path.parent
    md = (out / "report.md").read_text()
    html = html_path.read_text()
    for name in ("dense", "umm-4", "ensemble-mean", "moe-4"):
        assert name in md and name in html
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["bon_gold_overlay.png", "bon_per_rm.png", "ppo_gold_overlay.png", "ppo_per_rm.png"]
    assert "](plots/ppo_gold_overlay.png)" in md
    # Every image in the HTML is inlined and decodes to a PNG; no external references.
    data = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(data) == 4 and all(base64.b64decode(d)[:8] == b"\x89PNG\r\n\x1a\n" for d in data)
    assert "src=\"plots/" not in html and "<link" not in html
    # The main-table row: every estimate of a row with per-seed data carries its interval; the accuracy interval is
    # computed from the per-pair outcomes (71 of 100 right in both seeds).
    dense_row = md.split("| dense | dense |")[1].split("\n")[0]
    cells = [c.strip() for c in dense_row.split("|")[:-1]]
    assert cells[0].startswith("0.71 [") and cells[2] == "0.55"  # acc HH has no per-pair data here: point only
    numeric = [c for i, c in enumerate(cells) if i not in (1, 2)]  # acc gold labels (none) and acc HH (point)
    assert all(re.fullmatch(r"-?[\d.e+-]+ \[-?[\d.e+-]+, -?[\d.e+-]+\].*", c) for c in numeric), cells
    from umm_ray.report.verdict import summarize
    s = summarize(res[0], "ppo")
    assert f"{s.peak_gold:.3g} [" in dense_row
    assert "| dense | dense | 1,234,567 | 1 | 250 | +0.23 |" in md  # the cost table, with the length taste
    assert "| ensemble-mean | ensemble | 4,938,268 | 4 | 60 | - |" in md
    assert "**umm-4**: MITIGATES." in md and "**dense**: reference." in md
    assert "**ensemble-mean**: PPO: no interval for the difference" in md  # no per-seed data: no verdict word
    assert "torch:" in html and "ppo:" in md  # versions and config recorded
    assert "wall time 1 s" in md and "2 seeds" in md
    assert "| ensemble-mean | ensemble | runs/x/ensemble.json#mean |" in md
    intervals = json.loads((out / "results.json").read_text())["intervals"]
    assert intervals["umm-4"]["vs_dense"]["ppo_drop"]["hi"] < 0


def test_results_json_roundtrip_and_validation(tmp_path):
    res = results()
    build_report(res[:1], None, tmp_path)
    back = load_results(tmp_path / "results.json")
    assert back[0].to_dict() == res[0].to_dict()
    with pytest.raises(ValueError, match="unique names"):
        build_report([res[0], res[0]], None, tmp_path)
    with pytest.raises(ValueError, match="kind 'big'"):
        RMResult("x", "big")
    with pytest.raises(ValueError, match="gold has 1 entries but steps has 2"):
        PPOCurve(steps=[0, 1], kl=[0, 1], gold=[0], proxy=[0, 1])


def test_ppo_curve_from_metrics_rows(tmp_path):
    from umm_ray.report.metrics import MetricsLogger

    # The keys jobs.ppo logs; the first row's *_std are the initial spreads.
    with MetricsLogger(tmp_path, start_step=1, tensorboard=False) as log:
        for step in range(1, 4):
            log.log(step, {"kl_k1": 0.1 * step, "kl_k2": 0.2 * step, "kl_k3": 0.3 * step, "gold_reward": 1.0 + step,
                           "proxy_reward": 3.0 * step, "proxy_reward_std": 2.0 / step, "gold_reward_std": 0.5,
                           "kl_coef": 0.05, "sample": "text rows are fine"})
    curve = PPOCurve.from_metrics(read_metrics(tmp_path / "metrics.jsonl"))
    assert curve.steps == [1, 2, 3] and curve.kl == pytest.approx([0.2, 0.4, 0.6])
    assert curve.kl_k1 == pytest.approx([0.1, 0.2, 0.3]) and curve.kl_k3 == pytest.approx([0.3, 0.6, 0.9])
    assert (curve.proxy_std0, curve.gold_std0, curve.kl_coef) == (2.0, 0.5, 0.05)
    assert curve.gold_sd == [0.5] * 3 and curve.batch_size is None
    assert PPOCurve.from_metrics(read_metrics(tmp_path / "metrics.jsonl"), batch_size=64).batch_size == 64
    assert PPOCurve.from_metrics(read_metrics(tmp_path / "metrics.jsonl"), kl_key="kl_k1").kl == curve.kl_k1
    with pytest.raises(ValueError, match="no row has all"):
        PPOCurve.from_metrics([{"step": 0, "loss": 1.0}])
    json.dumps(curve.to_dict())


def _sparse_gold_rows(rng, steps: int, every: int, drop: float) -> list[dict]:
    """PPO metrics rows as the driver logs them with ppo.gold_every `every`: gold keys only on the scored steps."""
    from umm_ray.ppo.driver import gold_step

    rows = []
    for s in range(1, steps + 1):
        row = {"step": s, "kl_k2": 0.05 * s, "proxy_reward": 0.2 * s, "proxy_reward_std": 0.3, "kl_coef": 0.0}
        if gold_step(s, every, steps):
            gold = 0.05 * min(s, steps // 2) - drop * max(0, s - steps // 2) / steps + rng.normal(0, 0.03)
            row |= {"gold_reward": gold, "gold_reward_std": 0.3}
        rows.append(row)
    return rows


def test_report_builds_from_ppo_runs_with_gold_every_k_steps(tmp_path):
    """ppo.gold_every 3: curves hold the scored steps only (no value is filled in for the others), and the report,
    its intervals and verdicts build from them."""
    from umm_ray.report.records import SeedRuns
    from umm_ray.stages import mean_ppo

    rng = np.random.default_rng(1)
    res = []
    for name, kind, drop in (("dense", "dense", 0.8), ("umm-4", "umm", 0.0)):
        curves = [PPOCurve.from_metrics(_sparse_gold_rows(rng, 25, 3, drop), batch_size=64) for _ in range(2)]
        assert curves[0].steps == [1, 4, 7, 10, 13, 16, 19, 22, 25]
        assert curves[0].proxy[:2] == [0.2, 0.8] and len(curves[0].gold_sd) == 9
        res.append(RMResult(name, kind, ppo=mean_ppo(curves), seeds=SeedRuns(ppo=curves)))
    md = build_report(res, Config(), tmp_path / "report").parent.joinpath("report.md").read_text()
    dense_row = md.split("| dense | dense |")[1].split("\n")[0]
    assert re.search(r"\d \[-?[\d.]+, -?[\d.]+\]", dense_row)  # PPO estimates with intervals
    assert "nan" not in md.lower()
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved and "NaN" not in json.dumps(saved)
