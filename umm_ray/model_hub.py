"""Models named by Hugging Face hub id (`owner/name`), resolved to a local snapshot once per node: reward models,
and the policy (ppo.policy_path / bon.policy_path) every policy, reference and rollout actor loads (`local_model`).

A gold or proxy RM given as a hub id (e.g. reward.gold `Skywork/Skywork-Reward-Llama-3.1-8B`) is downloaded into the
standard HF cache (`$HF_HOME/hub/models--owner--name/snapshots/<rev>/`) by `huggingface_hub.snapshot_download`,
under a file lock in that cache: the reward actors of one node start together, the first downloads, the others wait
and then find the snapshot complete, and every actor loads from the same local files. Only safetensors weights are
fetched (pickled `.bin` / `.pt` files never are), and a repo without safetensors stops with an error naming the id:
unpickling a checkpoint can run arbitrary code.

With `HF_HUB_OFFLINE=1` (or no network) a snapshot already in the cache is used as it is.

    path = hub_snapshot("Skywork/Skywork-Reward-Llama-3.1-8B")   # -> .../snapshots/<rev>
    check_hub_model("Skywork/Skywork-Reward-Llama-3.1-8B", what="reward.gold")  # at job start: no download
    local_model("Qwen/Qwen2.5-0.5B-Instruct", what="ppo.policy_path")  # in an actor: its own node's snapshot
"""

from __future__ import annotations

import re
from pathlib import Path

from umm_ray.models.families import PICKLE_SUFFIXES

__all__ = ["HUB_ID", "is_hub_id", "hub_snapshot", "check_hub_model", "local_model", "check_model_input",
           "HubModelError"]

# owner/name: what the hub accepts as a model id (no third path component, no leading '.' or '/')
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

# What a reward model needs from its repo: configs, safetensors (and their shard index), tokenizer files. Pickled
# weights (*.bin, *.pt, *.pth, *.ckpt, *.pkl) match none of these, so they are never downloaded.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "tokenizer*"]


class HubModelError(ValueError):
    """A hub model could not be resolved to local safetensors weights; the message names the id and why."""


def is_hub_id(text: str) -> bool:
    """True for `owner/name` that is not a local path (checked on this machine) and not an ensemble manifest."""
    text = str(text)
    return bool(HUB_ID.match(text)) and not text.endswith(".json") and not Path(text).exists()


def _lock_path(repo_id: str) -> Path:
    from huggingface_hub import constants  # heavy-ish (~0.3 s); only reward actors given a hub id need it

    root = Path(constants.HF_HUB_CACHE) / ".locks" / "umm_ray"
    root.mkdir(parents=True, exist_ok=True)
    return root / (repo_id.replace("/", "--") + ".lock")


def _no_safetensors(repo_id: str, files: list[str], what: str) -> HubModelError:
    pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
    return HubModelError(f"{what}: hub model {repo_id!r} has no safetensors weights"
                         f"{' (only pickle weights ' + str(pickles) + ')' if pickles else ''}; umm_ray loads "
                         "safetensors only, because unpickling .bin/.pt weights can execute arbitrary code. Use a "
                         "revision with model.safetensors, or convert it with save_pretrained in a trusted place")


def check_hub_model(repo_id: str, revision: str | None = None, what: str = "reward model") -> list[str]:
    """The file names of hub model `repo_id`, checked to include safetensors weights, without downloading them: asked
    of the hub (metadata only), or of the local HF cache when offline or the hub does not answer. Jobs call it at
    start, so a wrong or pickle-only gold stops before hours of RM training rather than at the BoN / PPO stage.

    Raises:
        HubModelError: neither the hub nor the cache knows the model, or it has no safetensors weights.
    """
    from huggingface_hub import HfApi, constants, snapshot_download  # heavy-ish; only hub ids are checked

    if not HUB_ID.match(str(repo_id)):
        raise HubModelError(f"{what}: {repo_id!r} is not a hub model id (owner/name)")
    errors = []
    files = None
    if not constants.HF_HUB_OFFLINE:
        try:
            files = HfApi().list_repo_files(repo_id, revision=revision)
        except Exception as e:  # unreachable hub, unknown or gated repo: the cache may still hold it
            errors.append(f"hub: {type(e).__name__}: {str(e)[:200]}")
    if files is None:
        try:
            path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
            files = [p.name for p in path.iterdir()]
        except Exception as e:  # not in this machine's HF cache either
            errors.append(f"HF cache: {type(e).__name__}: {str(e)[:200]}")
    if files is None:
        raise HubModelError(f"{what}: {repo_id!r} is neither a local directory nor a model the hub or the HF cache "
                            f"($HF_HOME) knows ({'; '.join(errors)})")
    if not any(f.endswith(".safetensors") for f in files):
        raise _no_safetensors(repo_id, files, what)
    return files


def hub_snapshot(repo_id: str, revision: str | None = None, what: str = "reward model") -> Path:
    """The local snapshot directory of hub model `repo_id` (downloaded once per node; safetensors only).

    Args:
        repo_id: `owner/name`.
        revision: branch, tag or commit; None = main.
        what: the config key or role named in errors (e.g. 'reward.gold').

    Raises:
        HubModelError: not an id, not downloadable and not in the cache, or no safetensors weights in the repo.
    """
    from filelock import FileLock  # comes with huggingface_hub; only hub ids need a cross-process lock
    from huggingface_hub import snapshot_download  # heavy-ish; only hub ids are downloaded

    if not HUB_ID.match(str(repo_id)):
        raise HubModelError(f"{what}: {repo_id!r} is not a hub model id (owner/name)")
    with FileLock(str(_lock_path(repo_id))):
        try:
            path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS))
        except Exception as e:  # offline and not cached, unknown repo, gated repo, network error: one clear message
            raise HubModelError(f"{what}: {repo_id!r} is neither a local directory nor downloadable from the model "
                                f"hub into the HF cache ({type(e).__name__}: {str(e)[:300]}). Without hub access, "
                                "pre-populate the HF cache ($HF_HOME) on every node, or give a local directory") from e
    if not any(path.glob("*.safetensors")):
        raise _no_safetensors(repo_id, [p.name for p in path.iterdir()], what)
    return path


def local_model(path: str, what: str = "model") -> str:
    """The directory to load `path` from on this node: a hub id's snapshot (`hub_snapshot`, downloaded once per node
    under the cache lock, safetensors only), any other value unchanged. Actors call it themselves, so each loads the
    copy in its own node's HF cache rather than a driver path that may not exist where the actor runs."""
    return str(hub_snapshot(path, what=what)) if is_hub_id(path) else str(path)


def check_model_input(path: str, what: str, hint: str = "") -> str:
    """`path` when it is a local directory or a hub id whose safetensors weights the hub or the HF cache lists (no
    download); jobs call it at start for the policy, so a wrong id stops before any actor starts.

    Raises:
        FileNotFoundError: neither a local path nor a hub id (`hint` says how to make one).
        HubModelError: a hub id the hub / cache does not know, or without safetensors weights.
    """
    if is_hub_id(path):
        check_hub_model(path, what=what)
    elif not Path(path).exists():
        raise FileNotFoundError(f"{path}: no {what} (neither a local directory nor a hub model id owner/name)"
                                + (f"; {hint}" if hint else ""))
    return str(path)
