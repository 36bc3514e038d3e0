"""Memory / speed levers of the training sections (sft, rm, ppo): their fields, declared once here.

config.py is near its size limit, so each section adds one line per lever (`precision: str = sft_precision()`). The
keys are declared keyed_at_default=False: at their defaults (today's behaviour) stages that read a whole section keep
the cache keys they had before the levers existed. The implementations are shared: `umm_ray.train.levers` (autocast,
gradient checkpointing) and `umm_ray.data.microbatch` (token-budget micro-batches).
"""

from __future__ import annotations

from typing import Any

from umm_ray.config_fields import opt

__all__ = ["precision_opt", "ppo_precision_opt", "grad_checkpointing_opt", "micro_batch_tokens_opt"]

_BF16 = ("bfloat16 autocast of forward/backward with fp32 master weights, gradients and AdamW state (CPU with "
         "AMX/AVX-512 BF16, or CUDA; ~2.5x faster for SmolLM2-135M on CPU, about half the activation memory)")


def precision_opt(what: str, reported: str) -> Any:
    """A training section's precision key: fp32 | bf16 (default fp32, keyed only when set)."""
    return opt("fp32", f"Compute precision of {what}: 'bf16' = {_BF16}. Reported in {reported}.",
               choices=("fp32", "bf16"), keyed_at_default=False)


def ppo_precision_opt() -> Any:
    """ppo.precision: auto | fp32 | bf16 (default auto, the behaviour from before the key)."""
    return opt("auto", "Compute precision of the PPO policy + critic (their log-prob / value passes and updates on "
                       "the policy ranks): 'auto' = bf16 weights under DeepSpeed's bf16 mode on GPU, fp32 on CPU (as "
                       f"before the key); 'fp32' = fp32 on every device; 'bf16' = {_BF16}, through DeepSpeed's "
                       "torch_autocast. Reported in the run's summary.json.",
               choices=("auto", "fp32", "bf16"), keyed_at_default=False)


def grad_checkpointing_opt(what: str, reported: str) -> Any:
    return opt(False, f"Gradient checkpointing of every decoder layer of {what}: activations of one layer at a "
                      f"time are kept, the rest recomputed in backward (~30% slower, much less memory). Reported in "
                      f"{reported}.", keyed_at_default=False)


def micro_batch_tokens_opt(what: str, batch: str, loss: str) -> Any:
    return opt(0, f"Token budget of {what}'s micro-batches (0 = off: {batch} is padded to its longest row). > 0: "
                  f"{batch} is split into length-sorted micro-batches whose padded size (rows x longest row) is at "
                  f"most this, each padded to its own longest row, their gradients accumulated into one optimizer "
                  f"step equal to the whole one's ({loss}); a single longer row gets a micro-batch of its own. Bounds "
                  f"activation memory and skips most padding.", lo=0, keyed_at_default=False)
