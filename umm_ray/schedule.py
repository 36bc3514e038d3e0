"""Run a small dependency graph of jobs with bounded concurrency: the compare job's stages as a concurrent graph.

Each job is a zero-argument callable with the names of the jobs it needs. A job starts as soon as everything it
needs has finished and a slot is free; `max_parallel=1` runs them one at a time in the order given (a job's
dependencies must come before it), which is exactly the sequential order of the calls it replaces.

Jobs here are threads of the driver. They do no heavy work themselves: a stage launches Ray Train workers, actors
or tasks and waits for them, so the cluster's resources are the real limit (a stage whose workers do not fit waits
in Ray's queue, and an autoscaling cluster adds nodes for it). `exclusive` jobs run alone: the eval stage times RM
throughput, and a concurrent stage on the same machine would distort the seq/s it measures.

A job that fails stops new jobs from starting; the jobs already running finish (their stages are cached for a
resume), then the first error is raised.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Job:
    """One node of the graph: `fn()` runs once every job named in `needs` has finished."""

    name: str
    fn: Callable[[], Any]
    needs: tuple[str, ...] = ()
    exclusive: bool = False  # run with no other job running (e.g. a stage that measures speed)


@dataclass
class JobGraph:
    """Jobs in the order they are added (dependencies first), run by `run(max_parallel)`.

        g = JobGraph()
        g.add("rm_dense", lambda: graph.rm("dense"))
        g.add("eval", evaluate, needs=("rm_dense",), exclusive=True)
        results = g.run(max_parallel=4)   # {"rm_dense": ..., "eval": ...}
    """

    jobs: dict[str, Job] = field(default_factory=dict)

    def add(self, name: str, fn: Callable[[], Any], needs: tuple[str, ...] = (), exclusive: bool = False) -> str:
        """Add a job; raises ValueError on a duplicate name or a dependency not added before it."""
        if name in self.jobs:
            raise ValueError(f"job {name!r} added twice")
        unknown = [n for n in needs if n not in self.jobs]
        if unknown:
            raise ValueError(f"job {name!r} needs {unknown}, which were not added before it")
        self.jobs[name] = Job(name, fn, tuple(needs), exclusive)
        return name

    def run(self, max_parallel: int = 1) -> dict[str, Any]:
        """Run every job; returns {name: fn()}. Raises the first job's exception after the running ones finish."""
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
        results: dict[str, Any] = {}
        pending = list(self.jobs.values())  # in insertion order: with one slot, jobs run exactly in this order
        running: dict[Future, Job] = {}
        error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="stage") as pool:
            while pending or running:
                if error is None:
                    self._start(pending, running, results, pool, max_parallel)
                if not running:
                    if error is None and pending:
                        raise RuntimeError(f"jobs {[j.name for j in pending]} can never start")
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = running.pop(fut)
                    try:
                        results[job.name] = fut.result()
                    except BaseException as e:  # noqa: BLE001 (re-raised below, once the running jobs have ended)
                        error = error or e
        if error is not None:
            raise error
        return results

    @staticmethod
    def _start(pending: list[Job], running: dict[Future, Job], results: dict, pool: ThreadPoolExecutor,
               max_parallel: int) -> None:
        """Start the pending jobs that may start now, in order. An exclusive job whose needs are met holds back
        every job after it until it has run (else a stream of later jobs could keep it waiting to the end); with
        one slot the first pending job is the only candidate, so the order is the given one."""
        for job in list(pending):
            if len(running) >= max_parallel:
                return
            needs_met = all(n in results for n in job.needs)
            if job.exclusive and needs_met:
                if not running:
                    pending.remove(job)
                    running[pool.submit(job.fn)] = job
                return
            if needs_met and not any(j.exclusive for j in running.values()):
                pending.remove(job)
                running[pool.submit(job.fn)] = job
            elif max_parallel == 1:
                return
