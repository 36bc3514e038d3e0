"""The comparison report: files written, images embedded, numbers and verdicts computed from the inputs."""

import base64
import json
import re

import numpy as np
import pytest

from umm_ray.algo.bon import bon_curve
from umm_ray.config import Config
from umm_ray.report import PPOCurve, RMResult, build_report, load_results, read_metrics
from umm_ray.report.verdict import verdict


def ppo_curve(peak_then_drop: float, steps: int = 16) -> PPOCurve:
    """Gold rises then falls by `peak_then_drop` after the middle; proxy rises throughout."""
    t = np.arange(steps)
    kl = (0.25 * t) ** 2
    gold = np.where(t <= steps // 2, 0.1 * t, 0.1 * (steps // 2) - peak_then_drop * (t - steps // 2) / (steps // 2))
    return PPOCurve(steps=t.tolist(), kl=kl.tolist(), gold=gold.tolist(), proxy=(0.3 * t).tolist(),
                    kl_coef=0.0, proxy_std0=1.0, gold_std0=0.5)


def results():
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(6, 8))
    gold = proxy + rng.normal(scale=0.5, size=(6, 8))
    dense = RMResult("dense", "dense", params=1234567, throughput=250.0, acc_testbed=0.71, acc_hh=0.55,
                     bon=bon_curve(proxy, gold), ppo=ppo_curve(0.6))
    umm = RMResult("umm-4", "umm", params=1234567, throughput=240.0, acc_testbed=0.74,
                   bon=bon_curve(proxy, gold + 0.1 * proxy), ppo=ppo_curve(0.0))
    ens = RMResult("ensemble-mean", "ensemble", params=4 * 1234567, throughput=60.0, acc_testbed=0.73,
                   ppo=ppo_curve(0.3), notes="runs/x/ensemble.json#mean")
    bad = RMResult("moe-4", "moe", params=2000000, acc_testbed=0.70, ppo=ppo_curve(0.9))
    return [dense, umm, ens, bad]


def test_verdicts_follow_the_numbers():
    dense, umm, ens, bad = results()
    assert verdict(dense, dense).startswith("reference")
    assert "over-optimised" in verdict(dense, dense)
    assert verdict(umm, dense).startswith("MITIGATES") or verdict(umm, dense).startswith("MIXED")
    assert "PPO:" in verdict(umm, dense) and "-> mitigates" in verdict(umm, dense)
    assert verdict(ens, dense).startswith("PARTLY MITIGATES")
    assert verdict(bad, dense).startswith("DOES NOT MITIGATE")
    # Without a dense proxy over-optimising there is nothing to mitigate: say so.
    flat = RMResult("dense", "dense", ppo=ppo_curve(0.0))
    assert "no over-optimisation" in verdict(umm, flat)


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
    # The main-table row carries the numbers computed from the (smoothed) PPO curve.
    from umm_ray.report.verdict import summarize
    s = summarize(res[0], "ppo")
    assert "| dense | dense | 1,234,567 | 250 | 0.71 | 0.55 |" in md
    assert f"{s.peak_gold:.3g}" in md.split("| dense |")[1].split("\n")[0]
    assert "torch:" in html and "ppo:" in md  # versions and config recorded
    assert "wall time 1 s" in md
    assert "| ensemble-mean | ensemble | runs/x/ensemble.json#mean |" in md


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
    assert PPOCurve.from_metrics(read_metrics(tmp_path / "metrics.jsonl"), kl_key="kl_k1").kl == curve.kl_k1
    with pytest.raises(ValueError, match="no row has all"):
        PPOCurve.from_metrics([{"step": 0, "loss": 1.0}])
    json.dumps(curve.to_dict())
