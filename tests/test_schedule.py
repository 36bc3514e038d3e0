"""JobGraph: dependencies respected, the slot limit held, exclusive jobs alone, one slot = the given order, errors."""

from __future__ import annotations

import threading
import time

import pytest

from umm_ray.schedule import JobGraph


class Log:
    """Records (job, start, end) and how many jobs ran at once."""

    def __init__(self):
        self.spans: dict[str, tuple[float, float]] = {}
        self.order: list[str] = []
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def job(self, name: str, seconds: float = 0.05, fail: bool = False):
        def fn():
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
                self.order.append(name)
            t0 = time.perf_counter()
            time.sleep(seconds)
            with self.lock:
                self.now -= 1
                self.spans[name] = (t0, time.perf_counter())
            if fail:
                raise ValueError(f"{name} failed")
            return name.upper()
        return fn


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def diamond(log: Log, exclusive: bool = False) -> JobGraph:
    g = JobGraph()
    for name in ("a", "b", "c", "d"):
        g.add(name, log.job(name))
    g.add("eval", log.job("eval"), needs=("a", "b", "c", "d"), exclusive=exclusive)
    g.add("bon", log.job("bon"), needs=("a", "b", "c", "d"))
    g.add("late", log.job("late", 0.2))
    return g


def test_one_slot_runs_in_the_given_order_one_at_a_time():
    log = Log()
    out = diamond(log).run(1)
    assert log.order == ["a", "b", "c", "d", "eval", "bon", "late"] and log.peak == 1
    assert out == {n: n.upper() for n in log.order}


def test_independent_jobs_overlap_up_to_the_limit_and_dependants_wait():
    log = Log()
    diamond(log).run(3)
    assert log.peak == 3
    assert overlaps(log.spans["a"], log.spans["b"])
    first_free = min(log.spans[n][1] for n in "abcd")
    assert all(log.spans[n][0] >= max(log.spans[m][1] for m in "abcd") for n in ("eval", "bon"))
    assert log.spans["d"][0] >= first_free  # the fourth RM waited for a slot


def test_an_exclusive_job_runs_alone_and_is_not_starved_by_later_jobs():
    log = Log()
    diamond(log, exclusive=True).run(8)
    ev = log.spans["eval"]
    assert not any(overlaps(ev, span) for name, span in log.spans.items() if name != "eval")
    assert ev[0] < log.spans["bon"][0]  # bon (added after eval) waited for it


def test_the_first_error_is_raised_after_running_jobs_finish_and_nothing_new_starts():
    log = Log()
    g = JobGraph()
    g.add("slow", log.job("slow", 0.3))
    g.add("bad", log.job("bad", 0.01, fail=True))
    g.add("after", log.job("after"), needs=("bad",))
    g.add("other", log.job("other", 0.01))
    with pytest.raises(ValueError, match="bad failed"):
        g.run(2)
    assert "slow" in log.spans  # finished, not abandoned
    assert "after" not in log.order and "other" not in log.order


def test_bad_graphs_are_refused_when_built():
    g = JobGraph()
    g.add("a", lambda: 1)
    with pytest.raises(ValueError, match="'a' added twice"):
        g.add("a", lambda: 2)
    with pytest.raises(ValueError, match=r"'b' needs \['z'\]"):
        g.add("b", lambda: 2, needs=("z",))
    with pytest.raises(ValueError, match="max_parallel"):
        g.run(0)
