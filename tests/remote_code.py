"""Tiny checkpoints that carry their own modelling code (HF `auto_map`), for the model.trust_remote_code tests.

`save_remote_lm` writes a causal LM of a model type transformers does not know, so loading it without
trust_remote_code=True fails and loading it with the flag runs the checkpoint's `remote_code.py`.
`save_remote_rm` writes a reward model of the known type "llama" whose own code adds `REMOTE_BONUS` to every score:
without the flag transformers quietly uses its built-in Llama classes, so the scores tell which code ran.
"""

from __future__ import annotations

import json
from pathlib import Path

REMOTE_BONUS = 1000.0
REMOTE_TYPE = "umm_test_remote"

_LM_CODE = f'''
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel


class RemoteLlamaConfig(LlamaConfig):
    model_type = "{REMOTE_TYPE}"


class RemoteLlamaModel(LlamaModel):
    config_class = RemoteLlamaConfig


class RemoteLlamaForCausalLM(LlamaForCausalLM):
    config_class = RemoteLlamaConfig
'''

_RM_CODE = f'''
from transformers import LlamaForSequenceClassification


class RemoteLlamaForSequenceClassification(LlamaForSequenceClassification):
    def __init__(self, config):
        super().__init__(config)
        self.score.register_forward_hook(lambda module, inputs, output: output + {REMOTE_BONUS})
'''

TEXTS = ["Sort the list: 3 1 2\nAnswer: 1 2 3", "Add 4 and 5.\nAnswer: 9", "Name a colour.\nAnswer: red"] * 20


def _with_code(out: Path, code: str, architecture: str, auto_map: dict, model_type: str) -> str:
    config = json.loads((out / "config.json").read_text())
    config.update(model_type=model_type, architectures=[architecture], auto_map=auto_map)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "remote_code.py").write_text(code)
    return str(out)


def save_remote_lm(out_dir: str | Path) -> str:
    """A tiny Llama causal LM whose config names an unknown model type served by its own `remote_code.py`."""
    from umm_ray.testbed.models import make_causal_lm, save_model
    from umm_ray.testbed.tokenizer import train_tokenizer

    out = Path(out_dir)
    tok = train_tokenizer(TEXTS, vocab_size=300)
    save_model(make_causal_lm("llama", tok, seed=0, hidden_size=64, num_layers=1, intermediate_size=64,
                              max_seq_len=128), tok, out)
    auto_map = {"AutoConfig": "remote_code.RemoteLlamaConfig", "AutoModel": "remote_code.RemoteLlamaModel",
                "AutoModelForCausalLM": "remote_code.RemoteLlamaForCausalLM"}
    return _with_code(out, _LM_CODE, "RemoteLlamaForCausalLM", auto_map, REMOTE_TYPE)


def save_remote_rm(out_dir: str | Path) -> str:
    """A tiny Llama reward model whose own code (used only with trust_remote_code) adds REMOTE_BONUS to scores."""
    from umm_ray.testbed.models import make_reward_model, save_model
    from umm_ray.testbed.tokenizer import train_tokenizer

    out = Path(out_dir)
    tok = train_tokenizer(TEXTS, vocab_size=300)
    save_model(make_reward_model("llama", tok, seed=0, hidden_size=64, num_layers=1, intermediate_size=64,
                                 max_seq_len=128), tok, out)
    auto_map = {"AutoModelForSequenceClassification": "remote_code.RemoteLlamaForSequenceClassification"}
    return _with_code(out, _RM_CODE, "RemoteLlamaForSequenceClassification", auto_map, "llama")
