"""ReferenceActor: the frozen initial policy, answering log-prob queries for the KL penalty.

It loads the same checkpoint the policy starts from and never changes, so `log pi_ref` is the SFT model's.
"""

from __future__ import annotations

import torch

from umm_ray.dtypes import resolve_dtype, torch_dtype
from umm_ray.model_hub import local_model
from umm_ray.ppo.experience import PolicyBatch, make_policy_batch, unpad
from umm_ray.ppo.modeling import batch_logprobs, disable_dropout


class ReferenceActor:
    """Frozen causal LM. Use as `ray.remote(ReferenceActor).options(num_cpus=1).remote(path)`.

    `dtype` ('auto' | 'bf16' | 'fp16' | 'fp32', ppo.reference_dtype) is resolved on the actor's device by
    `umm_ray.dtypes.resolve_dtype` ('auto': bf16 on GPU, fp32 on CPU) and the weights load straight in it; log-probs
    come out float32 (`batch_logprobs`).
    """

    def __init__(self, policy_path: str, micro_batch_size: int = 16, temperature: float = 1.0,
                 trust_remote_code: bool = False, num_threads: int = 1, dtype: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: ~3 s; paid in the actor, not the driver

        torch.set_num_threads(num_threads)
        name, policy_path = policy_path, local_model(policy_path, "ppo.policy_path")  # a hub id: this node's snapshot
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = resolve_dtype(dtype, device)
        self.model = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch_dtype(self.dtype),
                                                          trust_remote_code=trust_remote_code).to(device).eval()
        disable_dropout(self.model)
        self.model.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(policy_path, trust_remote_code=trust_remote_code)
        self.micro_batch_size, self.temperature = micro_batch_size, temperature
        self.name = f"ReferenceActor({name})"

    def ready(self) -> bool:
        """True once the model is loaded."""
        return True

    def logprobs_batch(self, batch: PolicyBatch) -> torch.Tensor:
        """Response log-probs under the reference: Tensor[B, R] (PolicyBatch layout), 0 at padding."""
        return batch_logprobs(self.model, batch, self.micro_batch_size, self.temperature)

    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[list[float]]:
        """Per-token log-probs of each response given its prompt; row i has len(response_ids[i]) floats."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batch = make_policy_batch(prompt_ids, response_ids, pad)
        return unpad(self.logprobs_batch(batch), batch.response_mask)
