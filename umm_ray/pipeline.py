"""Stage caching for multi-stage jobs: a stage is skipped when its config slice and its inputs are unchanged.

Each stage writes `<root>/<stage>/_done.json` = {key, summary, seconds, finished} only after it succeeds, so a crash
leaves every finished stage reusable and the failed one is simply redone. The key hashes the config sections the stage
reads plus the `finished` stamps of the stages it depends on: redoing an upstream stage (`--force sft`) therefore
invalidates everything downstream of it, and nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Stage:
    """One cached step. `fn(stage_dir) -> summary` must be deterministic given the config slice and its inputs."""

    name: str
    fn: Callable[[Path], dict]
    sections: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # anything else that must change the key (e.g. expert count)


class StageRunner:
    """Runs stages in order of calls, reusing finished ones. `force` names stages to redo regardless."""

    def __init__(self, root: str | Path, cfg: Any, force: tuple[str, ...] | list[str] = (), log=print):
        self.root = Path(root)
        self.cfg = cfg
        self.force = set(force)
        self.log = log
        self.timings: dict[str, float] = {}
        self.cached: dict[str, bool] = {}

    def key(self, stage: Stage) -> str:
        parts = {s: dataclasses.asdict(getattr(self.cfg, s)) for s in stage.sections}
        parts["__deps__"] = {d: self._marker(d).get("finished") for d in stage.deps}
        parts["__extra__"] = stage.extra
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def _marker(self, name: str) -> dict:
        path = self.root / name / "_done.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def run(self, stage: Stage) -> dict:
        """Run `stage` unless a finished run with the same key exists; returns its summary."""
        for dep in stage.deps:
            if not self._marker(dep):
                raise RuntimeError(f"stage '{stage.name}' needs stage '{dep}', which has not finished")
        key = self.key(stage)
        done = self._marker(stage.name)
        if done.get("key") == key and stage.name not in self.force:
            self.log(f"[stage {stage.name}] cached ({done.get('seconds', 0):.0f} s when run)")
            self.timings[stage.name], self.cached[stage.name] = done.get("seconds", 0.0), True
            return done["summary"]
        out = self.root / stage.name
        out.mkdir(parents=True, exist_ok=True)
        (out / "_done.json").unlink(missing_ok=True)
        self.log(f"[stage {stage.name}] running")
        t0 = time.perf_counter()
        summary = stage.fn(out)
        seconds = time.perf_counter() - t0
        marker = {"key": key, "summary": summary, "seconds": seconds, "finished": time.time()}
        tmp = out / "_done.json.tmp"
        tmp.write_text(json.dumps(marker, indent=1, default=str))
        os.replace(tmp, out / "_done.json")
        self.log(f"[stage {stage.name}] done in {seconds:.1f} s")
        self.timings[stage.name], self.cached[stage.name] = seconds, False
        return summary
