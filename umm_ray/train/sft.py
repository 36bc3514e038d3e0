"""Supervised fine-tuning of the policy on the testbed's SFT responses, with Ray Train, and its gold gain.

    model_dir = run_sft(cfg, layout)     # layout.sft_model: <output_dir>/sft/model/ (HF causal LM + tokenizer)

The loss is next-token cross-entropy on the response tokens only (prompt and padding are masked out). After
training, responses are sampled from the base and the SFT model on held-out prompts and scored by the testbed gold;
`sft/eval.json` records {gold_base, gold_sft, gain} beside the loss curve.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from umm_ray.config import Config
from umm_ray.data import read_jsonl
from umm_ray.data.chat import prompts_ids
from umm_ray.data.microbatch import right_trimmed, split_to_count, token_budget_groups
from umm_ray.data.tokenize import encode_prompt_response, pad_batch
from umm_ray.layout import RunLayout
from umm_ray.resources import train_resources
from umm_ray.testbed.gold import TestbedGold
from umm_ray.train.loop import TrainResult, TrainSpec, TrainTask, fit, save_history
from umm_ray.train.plots import plot_loss_curve

log = logging.getLogger(__name__)

IGNORE = -100  # label value cross-entropy skips
GOLD_EVAL_PROMPTS = 256  # held-out prompts sampled from base and SFT model to measure the gold gain


@dataclass
class SFTExample:
    """One SFT row: the model learns to produce `response` after `prompt`."""

    prompt: str
    response: str


def load_sft_examples(path: str | Path) -> list[SFTExample]:
    """Read `{prompt, response, ...}` rows; raise naming file and line for a row without them."""
    out = []
    for line, row in read_jsonl(path):
        prompt, response = row.get("prompt"), row.get("response")
        if not isinstance(prompt, str) or not isinstance(response, str) or not response:
            raise ValueError(f"{path}:{line}: an SFT row needs non-empty string fields 'prompt' and 'response'")
        out.append(SFTExample(prompt, response))
    if not out:
        raise ValueError(f"{path}: no SFT rows")
    return out


class SFTTask(TrainTask):
    """Causal-LM fine-tuning with the loss on response tokens only."""

    count_metrics = ("response_tokens",)

    def __init__(self, model_path: str, max_len: int, trust_remote_code: bool = False, chat_template: str = "auto"):
        self.model_path, self.max_len, self.trust_remote_code = str(model_path), max_len, trust_remote_code
        self.chat_template = chat_template  # model.chat_template: how prompts are rendered (umm_ray.data.chat)
        self._tok = None

    def __getstate__(self):  # ship the path, not a loaded tokenizer
        return {**self.__dict__, "_tok": None}

    @property
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer  # heavy: ~3 s, paid when the tokenizer is first needed

            self._tok = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=self.trust_remote_code)
            if self._tok.pad_token_id is None:
                self._tok.pad_token = self._tok.eos_token
        return self._tok

    def build(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM  # heavy: ~2 s, paid on the workers that build it

        return AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32, use_safetensors=True,
                                                    trust_remote_code=self.trust_remote_code)

    def collate(self, examples: list[SFTExample]) -> dict[str, torch.Tensor]:
        """input_ids/attention_mask/labels [B, T]; labels are IGNORE on the prompt and the padding."""
        tok = self.tokenizer
        encoded = [encode_prompt_response(tok, e.prompt, e.response, self.max_len, chat_template=self.chat_template)
                   for e in examples]
        ids, mask = pad_batch([s for s, _ in encoded], tok.pad_token_id)
        labels = ids.masked_fill(mask == 0, IGNORE)
        for row, (_, prompt_len) in enumerate(encoded):
            labels[row, :prompt_len] = IGNORE
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def loss(self, model, raw, batch) -> tuple[torch.Tensor, dict]:
        # HF shifts labels inside and averages over the non-ignored (response) tokens of this rank's batch.
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                    use_cache=False)
        return out.loss, {"response_tokens": float((batch["labels"][:, 1:] != IGNORE).sum())}

    def micro_batches(self, batch: dict, budget: int, count: int | None = None) -> list[tuple[dict, float]]:
        """Rows in length-sorted pieces of <= `budget` padded tokens (`token_budget_groups`), each cut to its own
        longest row; weight = the piece's share of the batch's response tokens, since the loss is their mean."""
        mask = batch["attention_mask"]
        groups = token_budget_groups(mask.sum(dim=1).tolist(), budget)
        groups = groups if count is None else split_to_count(groups, count)
        scored = batch["labels"][:, 1:] != IGNORE  # the positions HF's shifted cross-entropy averages over
        total = max(int(scored.sum()), 1)
        out = []
        for g in groups:
            rows = torch.tensor(g, device=mask.device)
            width = right_trimmed(mask[rows])  # right padding: the piece needs its longest row's columns only
            piece = {k: v[rows, :width] for k, v in batch.items()}
            out.append((piece, int(scored[rows].sum()) / total))
        return out

    def save(self, raw, out_dir: Path) -> None:
        raw.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)

    def fingerprint(self) -> dict:
        # The default mode stays out of the key so checkpoints written before the option existed still resume.
        chat = {} if self.chat_template == "auto" else {"chat_template": self.chat_template}
        return {"task": "sft", "model_path": self.model_path, "max_len": self.max_len, **chat}


# ---------------------------------------------------------------------------------------------------------------------
# Sampling + gold: the SFT gold gain.


@torch.no_grad()
def sample_responses(model_dir: str | Path, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
                     top_p: float = 1.0, seed: int = 0, batch_size: int = 64, trust_remote_code: bool = False,
                     chat_template: str = "auto") -> list[str]:
    """Sample one response per prompt with HF `generate` (left padding; special tokens stripped); prompts are
    rendered by `chat_template` mode as in training."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: ~3 s, paid in the sampling task

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True,
                                                 trust_remote_code=trust_remote_code).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    torch.manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch_size):
        seqs = prompts_ids(tok, prompts[i:i + batch_size], chat_template)
        ids, mask = pad_batch(seqs, pad, side="left")  # the same prompt ids training saw
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True,
                             temperature=max(temperature, 1e-5), top_p=top_p, pad_token_id=pad,
                             eos_token_id=tok.eos_token_id)
        out += tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    return out


def gold_of_samples(model_dir: str | Path, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float,
                    seed: int, trust_remote_code: bool = False, chat_template: str = "auto") -> dict:
    """Mean testbed gold of one sampled response per prompt (runs as a Ray task)."""
    responses = sample_responses(model_dir, prompts, max_new_tokens, temperature, top_p, seed,
                                 trust_remote_code=trust_remote_code, chat_template=chat_template)
    scores = TestbedGold().score(prompts, responses)
    return {"mean": sum(scores) / len(scores), "n": len(scores), "examples": list(zip(prompts[:3], responses[:3]))}


def sft_gold_gain(cfg: Config, base_dir: Path, sft_dir: Path, prompts: list[str]) -> dict:
    """Gold of base vs SFT samples on the same prompts, measured concurrently in two Ray tasks."""
    task = ray.remote(num_cpus=1)(gold_of_samples)
    r = cfg.rollout
    args = (prompts, r.max_new_tokens, r.temperature, r.top_p, cfg.run.seed, cfg.model.trust_remote_code,
            cfg.model.chat_template)
    base, sft = ray.get([task.remote(str(base_dir), *args), task.remote(str(sft_dir), *args)])
    return {"gold_base": base["mean"], "gold_sft": sft["mean"], "gain": sft["mean"] - base["mean"],
            "n_prompts": len(prompts), "samples_base": base["examples"], "samples_sft": sft["examples"]}


def _eval_prompts(layout: RunLayout) -> list[str]:
    """Held-out prompts (the Best-of-N split, then PPO's): never seen in SFT training."""
    prompts = []
    for path in (layout.prompts_bon, layout.prompts_ppo):
        prompts += [row["prompt"] for _, row in read_jsonl(path)]
    return prompts[:GOLD_EVAL_PROMPTS]


# ---------------------------------------------------------------------------------------------------------------------
# The stage.


def sft_spec(cfg: Config, stage_dir: Path) -> TrainSpec:
    s = cfg.sft
    return TrainSpec(name="sft", stage_dir=stage_dir, num_workers=s.num_workers, batch_size=s.batch_size,
                     epochs=s.epochs, lr=s.lr, seed=cfg.run.seed, checkpoint_every=s.checkpoint_every,
                     strategy=s.strategy, **train_resources(cfg), precision=s.precision,
                     grad_checkpointing=s.grad_checkpointing, micro_batch_tokens=s.micro_batch_tokens, section="sft")


def sft_base(cfg: Config, layout: RunLayout) -> Path:
    """The model SFT fine-tunes: sft.base_path (HF name or dir), else the testbed's tiny base model."""
    return Path(cfg.sft.base_path) if cfg.sft.base_path else layout.base


def run_sft(cfg: Config, layout: RunLayout, spec: TrainSpec | None = None, gold_eval: bool = True) -> Path:
    """Fine-tune the policy on the world's SFT records with Ray Train; write `layout.sft`: model/, eval.json, ...

    Args:
        cfg: uses sft.* (sft.base_path: the model to start from), run.seed/output_dir, model.max_seq_len,
            model.trust_remote_code, model.chat_template, rollout.* (sampling for the gold eval).
        layout: the run directory (`prepare_world` built its world).
        spec: override the TrainSpec built from cfg.sft (tests cap steps this way).
        gold_eval: measure the gold gain of SFT over the base model (needs testbed prompts).

    Returns:
        The directory of the fine-tuned HF causal LM (+ tokenizer).
    """
    stage_dir = layout.sft
    base = sft_base(cfg, layout)
    examples = load_sft_examples(layout.sft_data)
    task = SFTTask(str(base), cfg.model.max_seq_len, cfg.model.trust_remote_code, cfg.model.chat_template)
    spec = spec or sft_spec(cfg, stage_dir)
    t0 = time.time()
    result = fit(task, examples, spec)
    report = {**_summary(result, len(examples), time.time() - t0), "levers": spec.levers()}
    save_history(result.history, stage_dir / "metrics.json")
    plot_loss_curve(result.history, stage_dir / "loss_curve.png", title="SFT loss (response tokens)")
    if gold_eval:
        report.update(sft_gold_gain(cfg, base, result.model_dir, _eval_prompts(layout)))
        log.info("SFT gold: base %.3f -> sft %.3f (gain %+.3f)", report["gold_base"], report["gold_sft"],
                 report["gain"])
    (stage_dir / "eval.json").write_text(json.dumps(report, indent=1))
    return result.model_dir


def _summary(result: TrainResult, n_examples: int, seconds: float) -> dict:
    losses = result.losses()
    return {"model_dir": str(result.model_dir), "n_examples": n_examples, "steps": result.total_steps,
            "resumed_from": result.resumed_from, "loss_first": losses[0], "loss_last": losses[-1],
            "train_seconds": round(result.ended_at - result.started_at, 2), "stage_seconds": round(seconds, 2),
            "loss_curve": "loss_curve.png"}
