"""Pay the libraries' first-use costs at install time, not in the user's first job (scripts/install.sh runs this).

On a machine that has never run them (an empty HOME), two libraries build a cache on first use:
- matplotlib builds its font list (~/.cache/matplotlib) the first time pyplot is imported: every stage that draws a
  plot, and the report;
- vLLM inspects each model class in a subprocess before its first engine starts and keeps the answer in
  ~/.cache/vllm/modelinfos (about 10 s on 2 cores for the testbed's Llama): the compare job's pairs stage paid it.
Both caches are per user (HOME), so run this as the user who runs the jobs. Nothing here is needed for correctness:
a failure is reported and the install goes on.
"""

from __future__ import annotations

import sys
import time

# The architectures the default jobs start vLLM engines for: the testbed's Llama (model.family llama) and
# SmolLM2-135M-Instruct (the smol preset) are both LlamaForCausalLM.
VLLM_ARCHITECTURES = ("LlamaForCausalLM",)


def warm_matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (the import builds the font cache)


def warm_vllm(architectures: tuple[str, ...] = VLLM_ARCHITECTURES) -> None:
    from vllm.model_executor.models.registry import ModelRegistry

    for arch in architectures:
        # the lookup a starting engine makes: it reads the cache file, or inspects the class and writes it
        if ModelRegistry._try_inspect_model_cls(arch) is None:
            raise ValueError(f"vLLM does not know the architecture {arch!r}")


def main() -> int:
    for name, warm in (("matplotlib font cache", warm_matplotlib), ("vLLM model-class cache", warm_vllm)):
        t0 = time.perf_counter()
        try:
            warm()
        except Exception as e:  # noqa: BLE001  (a cold cache only costs time later)
            print(f"warm_caches: {name} not built ({type(e).__name__}: {e}); the first job builds it", file=sys.stderr)
            continue
        print(f"warm_caches: {name} ready in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
