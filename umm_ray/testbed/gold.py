"""The programmatic gold reward of the testbed, and an HF-checkpoint gold scorer for real use.

Gold plays the human: a per-family rubric over the parsed prompt and the response words,

    gold = w_cov * coverage + w_prec * precision + w_fmt * format - w_len * excess - w_rep * repetition

with every term in [0, 1] except `excess` = (words past the family's budget) / budget, capped at 3. The families weight
the terms differently (FAMILY_WEIGHTS), so preferences are instruction-specific. Inside the SFT distribution longer
responses usually carry more correct items, so length correlates with gold; past the budget, and for repeated
words, gold falls — the shortcut a proxy reward model can learn and a policy can exploit.

    TestbedGold().score(["List 2 fruits.\\nAnswer:"], [" apple, pear."])   # -> [1.7]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from umm_ray.dtypes import resolve_dtype, torch_dtype
from umm_ray.model_hub import hub_snapshot, is_hub_id
from umm_ray.testbed import lexicon as lx
from umm_ray.testbed.world import TASK_FAMILIES, Task, answer_of, answer_sentence, parse_prompt, target_words


@dataclass(frozen=True)
class Weights:
    """Rubric weights of one family."""

    coverage: float
    precision: float
    format: float
    length: float
    repetition: float


# Deliberately different per family (property c): lists care about coverage and repeats, answers about correctness
# and brevity, descriptions about form, rewrites about exact words in order.
FAMILY_WEIGHTS: dict[str, Weights] = {
    "list": Weights(coverage=1.0, precision=0.5, format=0.2, length=0.6, repetition=1.0),
    "describe": Weights(coverage=0.7, precision=0.6, format=0.6, length=0.3, repetition=0.4),
    "answer": Weights(coverage=1.2, precision=0.4, format=0.3, length=1.0, repetition=0.6),
    "rewrite": Weights(coverage=1.1, precision=0.2, format=0.4, length=0.8, repetition=0.2),
}
assert set(FAMILY_WEIGHTS) == set(TASK_FAMILIES)
MAX_EXCESS = 3.0
_WORD = re.compile(r"[a-z]+")
_COMMA_LIST = re.compile(r"[a-z]+(, [a-z]+)*")
_SPACE_LIST = re.compile(r"[a-z]+( [a-z]+)*")


@dataclass(frozen=True)
class Terms:
    """Rubric terms of one (prompt, response). All in [0, 1] except excess in [0, MAX_EXCESS]."""

    coverage: float
    precision: float
    format: float
    excess: float
    repetition: float
    budget: int
    n_words: int


def words_of(response: str) -> list[str]:
    """The lower-cased alphabetic words of a response (punctuation and digits ignored)."""
    return _WORD.findall(response.lower())


def budget_of(task: Task) -> int:
    """How many words a response to `task` may use before the length penalty starts."""
    if task.family == "list":
        return task.n
    if task.family == "describe":
        return task.n + 5  # "the X is a, b and c." is n + 4 words
    if task.family == "answer":
        return len(answer_sentence(task, answer_of(task))) + 1
    return len(task.words)


def _fraction(hits: int, total: int) -> float:
    return hits / total if total else 0.0


def _coverage_precision(task: Task, words: list[str], content: list[str]) -> tuple[float, float]:
    if task.family == "list":
        valid = set(lx.CATEGORIES[task.topic]) - {task.exclude}
        cov = min(task.n, len(set(content) & valid)) / task.n
        return cov, _fraction(sum(w in valid for w in content), len(content))
    if task.family == "describe":
        valid = set(lx.ASPECTS[task.topic])
        cov = min(task.n, len(set(content) & valid)) / task.n
        return cov, _fraction(sum(w in valid or w == task.subject for w in content), len(content))
    if task.family == "answer":
        answer = answer_of(task)
        allowed = set(answer_sentence(task, answer))
        return float(answer in words), _fraction(sum(w in allowed for w in content), len(content))
    target = target_words(task)
    cov = sum(a == b for a, b in zip(words, target)) / len(target)
    return cov, _fraction(sum(w in set(target) for w in words), len(words))


def _structure_ok(task: Task, response: str, words: list[str]) -> bool:
    """Half of the format term: the family's shape (the other half: ending with a period)."""
    body = response.strip().rstrip(".")
    if task.family == "list":
        return _COMMA_LIST.fullmatch(body) is not None
    if task.family == "describe":
        return words[:3] == ["the", task.subject, "is"]
    if task.family == "answer":
        sentence = answer_sentence(task, answer_of(task))
        return len(words) == len(sentence) and words[:-1] == sentence[:-1]
    return _SPACE_LIST.fullmatch(body) is not None


def rubric_terms(task: Task, response: str) -> Terms:
    """The rubric terms of one response to a parsed task."""
    words = words_of(response)
    content = words if task.family == "rewrite" else [w for w in words if w not in lx.FUNCTION_WORDS]
    cov, prec = _coverage_precision(task, words, content)
    fmt = 0.5 * _structure_ok(task, response, words) + 0.5 * response.strip().endswith(".")
    budget = budget_of(task)
    excess = min(MAX_EXCESS, max(0, len(words) - budget) / budget)
    rep = _fraction(len(content) - len(set(content)), len(content))
    return Terms(cov, prec, fmt, excess, rep, budget, len(words))


def combine(family: str, t: Terms) -> float:
    """Weighted sum of the terms with the family's weights."""
    w = FAMILY_WEIGHTS[family]
    return (w.coverage * t.coverage + w.precision * t.precision + w.format * t.format
            - w.length * t.excess - w.repetition * t.repetition)


@lru_cache(maxsize=65536)
def _task(prompt: str) -> Task:
    return parse_prompt(prompt)


def gold_score(prompt: str, response: str) -> float:
    """Gold of one (prompt, response); raises ValueError if the prompt is not from the testbed world."""
    task = _task(prompt)
    return combine(task.family, rubric_terms(task, response))


class TestbedGold:
    """The testbed's gold reward as a `Scorer`: a pure function of the prompt and response strings."""

    __test__ = False  # not a pytest class despite the name

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One gold score per (prompt, response) pair.

        Raises:
            ValueError: on a length mismatch, or naming the index and text of a prompt the world did not make.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"TestbedGold.score: {len(prompts)} prompts but {len(responses)} responses")
        out = []
        for i, (p, r) in enumerate(zip(prompts, responses)):
            try:
                out.append(gold_score(p, r))
            except ValueError as e:
                raise ValueError(f"TestbedGold.score: item {i}: {e}") from None
        return out


class HFGoldScorer:
    """A gold scorer over any HF sequence classifier (num_labels 1) on disk or by hub name, for real use.

    Delegates to `umm_ray.models.reward_model.RewardModelScorer` when that module is available; otherwise scores
    with a plain `AutoModelForSequenceClassification` and the shared tokenization (rendered prompt + response + eos;
    `chat_template` is the model.chat_template mode, as for every learned RM).
    """

    def __init__(self, path: str, max_len: int = 512, batch_size: int = 32, trust_remote_code: bool = False,
                 chat_template: str = "auto", dtype: str = "auto"):
        self.path = str(path)
        try:
            from umm_ray.models.reward_model import RewardModelScorer, load_reward_model  # heavy: torch
        except ImportError:
            RewardModelScorer = None
        if RewardModelScorer is not None:
            # the labeller runs in the driver process, on CPU: 'auto' resolves to fp32 there
            if is_hub_id(self.path):
                self.path = str(hub_snapshot(self.path, what="reward.gold"))
            model, tok = load_reward_model(self.path, trust_remote_code=trust_remote_code,
                                           dtype=torch_dtype(resolve_dtype(dtype, "cpu")))
            self._inner = RewardModelScorer(model, tok, max_len=max_len, batch_size=batch_size,
                                            chat_template=chat_template)
        else:
            self._inner = _PlainHFScorer(self.path, max_len, batch_size, trust_remote_code, chat_template)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self._inner.score(prompts, responses)


class _PlainHFScorer:
    """Self-contained fallback used only until the models package provides RewardModelScorer."""

    def __init__(self, path: str, max_len: int, batch_size: int, trust_remote_code: bool, chat_template: str = "auto"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer  # heavy: ~3 s; HF gold only

        self.tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.model.config.num_labels != 1:
            raise ValueError(f"{path}: gold scorer needs num_labels=1, got {self.model.config.num_labels}")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tok.pad_token_id or self.tok.eos_token_id
        self.model.eval()
        self.max_len, self.batch_size, self.chat_template = max_len, batch_size, chat_template

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch  # heavy: ~1.5 s; the programmatic TestbedGold in this module never needs it

        from umm_ray.data.tokenize import encode_texts  # imports torch (see above)

        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(prompts), self.batch_size):
                ids, mask = encode_texts(self.tok, prompts[i:i + self.batch_size], responses[i:i + self.batch_size],
                                         self.max_len, self.chat_template)
                out += self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
        return out


def load_gold(spec: str = "testbed", **kwargs) -> TestbedGold | HFGoldScorer:
    """'testbed' -> TestbedGold(); anything else is an HF sequence-classifier path or hub name."""
    return TestbedGold() if spec == "testbed" else HFGoldScorer(spec, **kwargs)
