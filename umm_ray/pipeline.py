"""Stage caching for multi-stage jobs: a stage is skipped when the config keys it reads and its inputs are unchanged.

Each stage writes `<root>/<stage>/_done.json` = {key, inputs, summary, seconds, started, finished} only after it
succeeds, so a crash leaves every finished stage reusable and the failed one is simply redone. The key hashes

  * the values of the config keys the stage *reads*, declared next to the stage function with `@reads(...)` (never a
    hand-written list of whole sections at the call site, which is how a stage ended up ignoring `reward.gold`);
  * the `finished` stamps of the stages it depends on: redoing an upstream stage (`--compare.force sft`) therefore
    invalidates everything downstream of it, and nothing else;
  * `extra`: inputs that are not config (e.g. the proxy list built from upstream summaries).

`run.output_dir` is never part of a key: it is where the cache lives, so another directory is another cache.

A stage that re-runs because its key changed (or is forced) starts from an empty directory: resumable checkpoints
left there were made with other inputs, and resuming them would return the old results under the new key. A stage
that crashed resumes as before (`_started.json` holds the key it was started with). Once a stage is done its resume
state (`umm_ray.layout.resume_state`) is deleted unless `run.keep_checkpoints`: with 135M models it is gigabytes a
stage (a 6-expert MoE's last checkpoint with AdamW state: 4.4 GB), and a done stage is never resumed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from umm_ray.layout import resume_state
from umm_ray.storage import check_new_nodes

# The cache's location, how weights travel to the engines (the same weights either way) and whether engines free
# their memory between rollouts (the same samples either way), and whether ensemble members or RM stages share one
# worker group (the same models either way), whether an ensemble's members score in one actor (the same scores),
# and whether a done stage's checkpoints are kept: not inputs.
NOT_KEYED = ("run.output_dir", "rollout.weight_sync", "rollout.sync_bucket_mb", "rollout.sleep_mode",
             "ensemble.worker_group", "ensemble.score_actors", "compare.rm_worker_group", "run.keep_checkpoints")


@dataclass(frozen=True)
class StageReads:
    """The config keys a stage function reads: `keys` always, plus `also(cfg, *args)` for reads that depend on the
    config or on the stage's arguments (e.g. an ensemble proxy also reads ensemble.aggregate)."""

    keys: tuple[str, ...]
    also: Callable[..., Iterable[str]] | None = None

    def resolve(self, cfg: Any, *args: Any) -> tuple[str, ...]:
        extra = tuple(self.also(cfg, *args)) if self.also else ()
        return tuple(dict.fromkeys(self.keys + extra))


def reads(*keys: str, also: Callable[..., Iterable[str]] | None = None) -> Callable:
    """Decorator: declare the config keys ('section.key', or 'section' for all of it) a stage function reads."""
    def mark(fn: Callable) -> Callable:
        fn.stage_reads = StageReads(tuple(keys), also)
        return fn
    return mark


def declared_reads(fn: Callable, cfg: Any, *args: Any) -> tuple[str, ...]:
    """The keys `fn` declared with `@reads`, resolved for this config and these stage arguments."""
    decl = getattr(fn, "stage_reads", None)
    if not isinstance(decl, StageReads):
        raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} declares no config reads: decorate it with @reads(...)")
    return decl.resolve(cfg, *args)


def leaf_keys(cfg: Any) -> list[str]:
    """Every 'section.key' of a config made of dataclass sections."""
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, s.name))]


def config_values(cfg: Any, keys: Iterable[str], stage: str = "?") -> dict[str, Any]:
    """{'section.key': value} for `keys` (a bare section expands to all its keys), sorted, without NOT_KEYED and
    without keys declared `opt(..., keyed_at_default=False)` while they hold their default (keys added later to a
    section stages read whole: runs cached before them keep their keys).

    Raises KeyError naming the stage and the key when the config has no such key (a typo in a declaration).
    """
    out: dict[str, Any] = {}
    for key in keys:
        section, _, name = key.partition(".")
        sec = getattr(cfg, section, None)
        fields = {f.name: f for f in dataclasses.fields(sec)} if dataclasses.is_dataclass(sec) else {}
        if not fields or (name and name not in fields):
            raise KeyError(f"stage {stage!r} declares config key {key!r}, which {type(cfg).__name__} does not have")
        for n in [name] if name else list(fields):
            if f"{section}.{n}" not in NOT_KEYED and not _unkeyed_default(fields[n], getattr(sec, n)):
                out[f"{section}.{n}"] = getattr(sec, n)
    return dict(sorted(out.items()))


def _unkeyed_default(f: dataclasses.Field, value: Any) -> bool:
    """A key declared with keyed_at_default=False (`umm_ray.config_fields.opt`) that holds its default: it is left
    out of stage keys, so stages cached before the key existed keep their keys."""
    return not f.metadata.get("keyed_at_default", True) and f.default is not dataclasses.MISSING and value == f.default


@dataclass(frozen=True)
class Stage:
    """One cached step. `fn(stage_dir) -> summary` must be deterministic given the keys it reads and its inputs.

    Attributes:
        name: the stage directory under the runner's root, and how `deps` and `--compare.force` name it.
        fn: runs the stage into its directory and returns a JSON-serialisable summary.
        reads: config keys it reads (`declared_reads` of the stage function).
        deps: stages whose outputs it reads.
        extra: non-config inputs that must change the key (a proxy list, a resolved file path, ...).
        config: the config its reads are taken from, when not the runner's (a seed's copy: `umm_ray.graph`).
    """

    name: str
    fn: Callable[[Path], dict]
    reads: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    config: Any = None


class WouldRun(Exception):
    """Raised by a dry-run `StageRunner` at the first stage it would have to run (nothing is run or written)."""

    def __init__(self, stage: str, why: str):
        super().__init__(f"stage {stage!r} would run ({why})")
        self.stage, self.why = stage, why


class StageRunner:
    """Runs stages in order of calls, reusing finished ones. `force` names stages to redo regardless.

    `dry_run`: report finished stages as cached and raise `WouldRun` at the first stage that would run, so a job can
    show what it would do without doing it (the stages after that one depend on its results).
    """

    def __init__(self, root: str | Path, cfg: Any, force: tuple[str, ...] | list[str] = (), log=print,
                 dry_run: bool = False):
        self.root = Path(root)
        self.cfg = cfg
        self.force = set(force)
        self.log = log
        self.dry_run = dry_run
        self.timings: dict[str, float] = {}
        self.cached: dict[str, bool] = {}
        self._begun: dict[str, str] = {}  # stage -> key, of the stages `begin` readied in this process
        # A config without a run section (a toy one) keeps everything: deleting needs the user's say-so
        self.keep_checkpoints = getattr(getattr(cfg, "run", None), "keep_checkpoints", True)

    def inputs(self, stage: Stage) -> dict:
        """Everything the key hashes: the read config values, the deps' finished stamps and `extra`."""
        cfg = self.cfg if stage.config is None else stage.config
        return {"config": config_values(cfg, stage.reads, stage.name),
                "deps": {d: self._marker(d).get("finished") for d in stage.deps},
                "extra": json.loads(json.dumps(stage.extra, sort_keys=True, default=str))}

    def key(self, stage: Stage) -> str:
        blob = json.dumps(self.inputs(stage), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def _marker(self, name: str, file: str = "_done.json") -> dict:
        path = self.root / name / file
        return json.loads(path.read_text()) if path.is_file() else {}

    @staticmethod
    def _clear(out: Path) -> None:
        """Empty a stage directory (its own outputs only: every stage owns `<root>/<name>/`)."""
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    @staticmethod
    def _changes(done: dict, inputs: dict) -> str:
        """What differs from the finished run, for the log ('reward.gold, dep sft')."""
        if not done:
            return "not run before"
        before = done.get("inputs", {})
        old, new = before.get("config", {}), inputs["config"]
        changed = [k for k in sorted(set(old) | set(new)) if old.get(k, KeyError) != new.get(k, KeyError)]
        changed += [f"dep {d}" for d, t in inputs["deps"].items() if before.get("deps", {}).get(d) != t]
        changed += ["inputs"] if before.get("extra") != inputs["extra"] else []
        return ", ".join(changed) or "key format"

    def _drop_resume_state(self, out: Path) -> str:
        """Delete a done stage's resume state unless run.keep_checkpoints; the log's note of what went."""
        if self.keep_checkpoints:
            return ""
        paths = resume_state(out)
        size = sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        for p in paths:
            shutil.rmtree(p)
        return f" (deleted {size / 1e9:.2f} GB of resume checkpoints; run.keep_checkpoints keeps them)" if paths else ""

    def _resolve(self, stage: Stage) -> tuple[dict, str, dict, bool]:
        """(inputs, key, the finished run's marker, whether that finished run is reused) after checking the deps."""
        for dep in stage.deps:
            if not self._marker(dep):
                if self.dry_run:
                    raise WouldRun(dep, "not run before")
                raise RuntimeError(f"stage '{stage.name}' needs stage '{dep}', which has not finished")
        inputs = self.inputs(stage)
        key = self.key(stage)
        done = self._marker(stage.name)
        return inputs, key, done, done.get("key") == key and stage.name not in self.force

    def _open(self, stage: Stage, key: str, done: dict, why: str) -> Path:
        """Ready the stage directory for a run with `key`: emptied when it holds outputs of other inputs (or the
        stage is forced), `_started.json` written. Once per stage and key in this process, so what was done into it
        after `begin` is kept by `run`."""
        if self.dry_run:
            raise WouldRun(stage.name, why)
        out = self.root / stage.name
        if self._begun.get(stage.name) == key:
            return out
        check_new_nodes(self.root)  # nodes an autoscaler added since the job started must share the run dir too
        out.mkdir(parents=True, exist_ok=True)
        begun = self._marker(stage.name, "_started.json")
        if stage.name in self.force or done.get("key", key) != key or begun.get("key", key) != key:
            self._clear(out)  # outputs of other inputs: never resume them
        (out / "_done.json").unlink(missing_ok=True)
        (out / "_started.json").write_text(json.dumps({"key": key}))
        self._begun[stage.name] = key
        return out

    def begin(self, stage: Stage) -> Path | None:
        """Ready `stage` to run, as `run` would, without running it: None when its finished run is reused, else its
        directory. Work written there before `run` is kept (the compare job trains several RM stages' models in one
        worker group first; each stage's `run` then finds its models done)."""
        inputs, key, done, reused = self._resolve(stage)
        if reused:
            return None
        return self._open(stage, key, done, "forced" if stage.name in self.force else self._changes(done, inputs))

    def run(self, stage: Stage) -> dict:
        """Run `stage` unless a finished run with the same key exists; returns its summary."""
        inputs, key, done, reused = self._resolve(stage)
        if reused:
            self.log(f"[stage {stage.name}] cached ({done.get('seconds', 0):.0f} s when run)")
            self.timings[stage.name], self.cached[stage.name] = done.get("seconds", 0.0), True
            return done["summary"]
        why = "forced" if stage.name in self.force else self._changes(done, inputs)
        out = self._open(stage, key, done, why)
        self.log(f"[stage {stage.name}] running ({why})")
        started, t0 = time.time(), time.perf_counter()
        summary = stage.fn(out)
        seconds = time.perf_counter() - t0
        marker = {"key": key, "inputs": inputs, "summary": summary, "seconds": seconds, "started": started,
                  "finished": time.time()}
        tmp = out / "_done.json.tmp"
        tmp.write_text(json.dumps(marker, indent=1, default=str))
        os.replace(tmp, out / "_done.json")
        (out / "_started.json").unlink(missing_ok=True)
        self._begun.pop(stage.name, None)
        self.log(f"[stage {stage.name}] done in {seconds:.1f} s{self._drop_resume_state(out)}")
        self.timings[stage.name], self.cached[stage.name] = seconds, False
        return summary
