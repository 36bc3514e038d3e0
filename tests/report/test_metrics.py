"""MetricsLogger: JSON lines + TensorBoard; a resumed run truncates steps >= its start so nothing is duplicated."""

import json

import pytest

from umm_ray.report.metrics import MetricsError, MetricsLogger, read_metrics


def test_log_and_resume_truncates_later_steps(tmp_path):
    with MetricsLogger(tmp_path) as log:
        for step in range(6):
            log.log(step, {"gold": step * 0.1, "proxy": float(step)})
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(6))
    # The checkpoint was at step 4: the resumed launch redoes steps 4, 5, ... without duplicates.
    with MetricsLogger(tmp_path, start_step=4) as log:
        assert [r["step"] for r in read_metrics(log.path)] == [0, 1, 2, 3]
        for step in range(4, 8):
            log.log(step, {"gold": -1.0, "proxy": float(step)})
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(8))
    assert rows[3]["gold"] == pytest.approx(0.3) and rows[4]["gold"] == -1.0
    assert any((tmp_path / "tb").iterdir())  # TensorBoard event files were written


def test_fresh_start_clears_and_rejects_steps_before_start(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(0, {"x": 1})
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        assert read_metrics(log.path) == []
    with MetricsLogger(tmp_path, start_step=3, tensorboard=False) as log:
        with pytest.raises(ValueError, match="before this run's start 3"):
            log.log(2, {"x": 1})


def test_torn_last_line_is_dropped_on_resume_and_nan_becomes_null(tmp_path):
    import torch

    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(0, {"kl": float("nan"), "t": torch.tensor(2.5)})
        log.log(1, {"kl": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "kl": 0.')  # the process was killed mid-write
    with pytest.warns(UserWarning, match="torn final line"):
        rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[0]["kl"] is None and rows[0]["t"] == 2.5
    with pytest.warns(UserWarning):
        log = MetricsLogger(tmp_path, start_step=2, tensorboard=False)
    log.log(2, {"kl": 0.7})
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1, 2]


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(MetricsError, match=r"metrics.jsonl:2"):
        read_metrics(p)
