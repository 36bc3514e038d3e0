"""Configuration of the DMoERM reward-model kind (Quan 2024): the `dmoe` section of `Config`.

Kept in its own module (config.py is near its size limit); fields are declared with the shared
`umm_ray.config_fields.opt`, so the section validates, prints `--help` lines and takes `--dmoe.key value` overrides
like every other section.
Defaults train the testbed's tiny backbones on CPU (the epochs were checked on the training tests' world: the 'test'
preset with 600 prompts, ~60 phase-1 pairs per task); the paper's LoRA settings (r 32, alpha 32, dropout 0.05 on
q_proj / v_proj, 60% of a task's pairs for phase 1) are the defaults too.
"""

from __future__ import annotations

from dataclasses import dataclass

from umm_ray.config_fields import opt

__all__ = ["DMoEConfig"]


@dataclass
class DMoEConfig:
    tasks: list = opt([], "Task names (router classes, one inner model each); empty = the tasks found in the "
                          "training pairs (the testbed's four families, or a user's task/category column).")
    capabilities: list = opt([], "Capabilities (one LoRA expert each); empty = the testbed rubric terms, or every "
                                 "cap_<name> column of a user's data.")
    capability_data: str = opt("", "User data with capability columns (jsonl with prompt/chosen/rejected, task or "
                                   "category, cap_<name>); empty = rm.data. Unused on the testbed.")
    near_tie: float = opt(0.05, "Testbed capability labels: drop pairs whose rubric-term difference is at most "
                                "this (stands in for DMoERM's swap-consistency filter).", lo=0.0)
    lora_r: int = opt(32, "LoRA rank of each capability expert.", lo=1)
    lora_alpha: float = opt(32.0, "LoRA alpha (scale alpha / r).", lo=0.0)
    lora_dropout: float = opt(0.05, "LoRA dropout.", lo=0.0, hi=1.0)
    target_modules: list = opt(["q_proj", "v_proj"], "Backbone modules that get LoRA (llama/qwen2 names; gpt2: "
                                                     "c_attn, gpt_neox: query_key_value).")
    phase1_frac: float = opt(0.6, "Share of each task's training pairs for phase 1 (backbone + scalar head); the "
                                  "rest trains the phase-3 aggregation MLP.", lo=0.05, hi=0.95)
    router_epochs: int = opt(2, "Epochs of the outer router (task classification of the prompt).", lo=1)
    router_lr: float = opt(1e-3, "Learning rate of the router.", lo=0.0)
    phase1_epochs: int = opt(6, "Phase 1 epochs: each task's backbone + scalar head, BT on overall labels.", lo=1)
    phase1_lr: float = opt(1e-3, "Phase 1 learning rate.", lo=0.0)
    phase2_epochs: int = opt(4, "Phase 2 epochs: one LoRA expert (+ its head) per capability, BT on capability "
                                "labels.", lo=1)
    phase2_lr: float = opt(2e-3, "Phase 2 learning rate (LoRA weights and capability heads).", lo=0.0)
    phase3_epochs: int = opt(6, "Phase 3 epochs: the aggregation MLP over the K experts' hidden states, BT on "
                                "the held-back overall labels.", lo=1)
    phase3_lr: float = opt(1e-3, "Phase 3 learning rate (aggregation MLP).", lo=0.0)
