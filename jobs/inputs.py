"""What a job reads from outside its run directory, checked before any work; and `--dry-run`.

Every job accepts `--dry-run`: it parses the config, resolves every input it would read (local files and
directories must exist, reward sources must parse and exist, catalog model names must be fetched or fetchable),
shows which of its stages are already cached and which would run first, and exits 0 without starting Ray or writing
anything. An input that would stop the real run stops the dry run the same way (exit 2, naming the key and path).

Config keys naming a pretrained model may use a catalog name (`umm_ray.pretrained.CATALOG`, e.g. `smollm2-135m`);
`resolve_models` swaps it for the cached HF directory, fetching it on first use.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from umm_ray.config import Config
from umm_ray.data.hub import PREFERENCE_DATASETS, PROMPT_DATASETS
from umm_ray.model_hub import check_hub_model, is_hub_id
from umm_ray.pipeline import WouldRun
from umm_ray.pretrained import cached_path, is_catalog_name, resolve_model
from umm_ray.reward_source import RewardSource, source_from_config

DRY_RUN = "--dry-run"
# Config keys that name a model to load (HF dir, hub id, or a catalog name).
MODEL_KEYS = ("sft.base_path", "rm.base_path", "ppo.policy_path", "bon.policy_path")
# The policy keys: actors load a hub id from their node's snapshot (`model_hub.local_model`), safetensors only.
POLICY_KEYS = ("ppo.policy_path", "bon.policy_path")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
DATA_SUFFIXES = (".jsonl", ".json", ".gz")


class InputError(ValueError):
    """An input the job would read is missing or malformed; the message names the key and the value."""


def split_dry_run(argv: list[str] | None) -> tuple[list[str], bool]:
    """(argv without --dry-run, whether it was given)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return [a for a in argv if a != DRY_RUN], DRY_RUN in argv


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def resolve_models(cfg: Config, fetch_missing: bool = True) -> Config:
    """`cfg` with every catalog model name in MODEL_KEYS replaced by its local directory, fetched on first use unless
    `fetch_missing` is False (a dry run: the directory is named, not fetched, so the stage keys it shows are the ones
    the real run will compute). Other values are left as they are."""
    for key in MODEL_KEYS:
        value = _get(cfg, key)
        if value and is_catalog_name(value):
            section, name = key.split(".")
            where = resolve_model(value) if fetch_missing else str(cached_path(value))
            sec = dataclasses.replace(getattr(cfg, section), **{name: where})
            cfg = dataclasses.replace(cfg, **{section: sec})
    return cfg


def _catalog_name(value: str) -> str | None:
    """The catalog name `value` spells: the name itself, or its cache directory (as `resolve_models` writes it)."""
    if is_catalog_name(value):
        return value
    path = Path(value)
    return path.name if is_catalog_name(path.name) and path == cached_path(path.name) else None


def _model_note(key: str, value: str) -> str:
    if (catalog := _catalog_name(value)) is not None:
        value, where = catalog, cached_path(catalog)
        state = "cached" if (where / "fetch.json").is_file() else "fetched on first use"
        return f"{key}: catalog model {value!r} -> {where} ({state})"
    if Path(value).exists():
        return f"{key}: {value}"
    if key in POLICY_KEYS and is_hub_id(value):
        check_hub_model(value, what=key)  # lists files only: a missing or pickle-only repo stops here
        return (f"{key}: {value!r} is not a local path; loaded as a hub model id (safetensors only, downloaded once "
                "per node into the HF cache: needs a reachable model hub or a pre-filled cache)")
    if HUB_ID.match(value):
        return f"{key}: {value!r} is not a local path; loaded as a hub id (needs a reachable model hub)"
    raise InputError(f"{key}: {value} does not exist (a local HF directory, a hub id owner/name, or a catalog name)")


def _data_note(key: str, value: str, hub_table: dict) -> str:
    if Path(value).exists():
        return f"{key}: {value}"
    if value.split(":")[0].lower() in hub_table:
        return f"{key}: hub dataset {value!r} (needs a reachable dataset hub)"
    raise InputError(f"{key}: {value} does not exist (a local .jsonl/.jsonl.gz file, or one of the hub datasets "
                     f"{sorted(hub_table)})")


def _source_note(key: str, source: RewardSource) -> str:
    source.check_exists(key)
    if source.kind == "hub":
        return (f"{key}: {source} is not a local path; loaded as a hub model id (safetensors only, downloaded once per "
                "node into the HF cache: needs a reachable model hub or a pre-filled cache)")
    return f"{key}: {source}"


def check_inputs(cfg: Config) -> list[str]:
    """One line per external input the config names, after checking it; raises InputError at the first bad one."""
    notes = []
    try:
        for key in MODEL_KEYS:
            if _get(cfg, key):
                notes.append(_model_note(key, _get(cfg, key)))
        if cfg.rm.data != "testbed":
            notes.append(_data_note("rm.data", cfg.rm.data, PREFERENCE_DATASETS))
        if cfg.rm.eval_data:
            notes.append(_data_note("rm.eval_data", cfg.rm.eval_data, PREFERENCE_DATASETS))
        for key in ("ppo.prompts", "bon.prompts"):
            if _get(cfg, key):
                notes.append(_data_note(key, _get(cfg, key), PROMPT_DATASETS))
        r = cfg.reward
        notes.append(_source_note("reward.gold", source_from_config(r.gold, r.remote_url, "reward.gold")))
        if r.proxy_path:
            notes.append(_source_note("reward.proxy_path", source_from_config(r.proxy_path, r.remote_url,
                                                                              "reward.proxy_path")))
        if cfg.compare.hh_eval not in ("", "auto") and not Path(cfg.compare.hh_eval).is_file():
            raise InputError(f"compare.hh_eval: {cfg.compare.hh_eval} does not exist")
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None
    return notes


def dry_run(cfg: Config, job: str, plan: Callable[[], Any] | None = None,
            resolve: Callable[[], Any] | None = None) -> None:
    """Check the inputs, show the stage plan, and exit: 0 when the run could start, 2 naming what would stop it.

    Args:
        plan: walks the job's stages with a dry-run `StageRunner` (raises `WouldRun` at the first one to run).
        resolve: the job's own input resolution (e.g. PPO's policy / proxy / gold / prompts), run as the real job
            would run it.
    """
    try:
        notes = check_inputs(cfg)
        if resolve is not None:
            resolve()
    except (InputError, ValueError, FileNotFoundError) as e:
        print(f"{job}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"dry run of jobs.{job} (run.output_dir {cfg.run.output_dir}):")
    for line in notes:
        print(f"  input  {line}")
    if plan is not None:
        try:
            plan()
            print("  stages every stage this job needs is cached: a real run would only read them")
        except WouldRun as w:
            print(f"  stages cached so far as listed above; the first to run: {w.stage} ({w.why}), then its "
                  "dependants")
    print("dry run: every input resolved; nothing was run or written")
    raise SystemExit(0)
