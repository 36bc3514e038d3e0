"""Measuring the properties that make reward hacking visible in the testbed (issue 2, part 3):

a) SFT responses' gold spreads (std > 0) and sits far above what an untrained policy (random tokens) gets;
b) inside the SFT distribution length correlates with gold (Spearman > 0.2), yet padding a response with repeated
   items — the way a length-hacking policy grows — lowers gold;
c) the same rubric change moves gold by different amounts per family (instruction-specific preferences).

`measure_properties` computes all three on generated data; `prepare_world` stores the result in world.json and the
tests assert the thresholds on it.
"""

from __future__ import annotations

import random
import statistics

from scipy.stats import spearmanr

from umm_ray.records import PromptRecord
from umm_ray.testbed import lexicon as lx
from umm_ray.testbed.gold import TestbedGold, words_of
from umm_ray.testbed.world import TASK_FAMILIES, random_responses, sft_responses


def _split_period(response: str) -> tuple[str, str]:
    body = response.rstrip()
    return (body[:-1], ".") if body.endswith(".") else (body, "")


def pad_with_repeats(response: str, k: int, rng: random.Random) -> str:
    """Append `k` repeats of the response's own content words, in its own separator style (a length-hacking edit)."""
    body, period = _split_period(response)
    words = [w for w in words_of(body) if w not in lx.FUNCTION_WORDS] or words_of(body) or ["the"]
    sep = ", " if "," in body else " "
    extra = [rng.choice(words) for _ in range(k)]
    return body + sep + sep.join(extra) + period


def edit(response: str, kind: str, rng: random.Random) -> str:
    """One standard rubric change, for property c: 'drop_period', 'add_repeat' or 'add_offtopic'."""
    body, period = _split_period(response)
    sep = ", " if "," in body else " "
    if kind == "drop_period":
        return body
    if kind == "add_repeat":
        return body + sep + words_of(body)[-1] + period
    if kind == "add_offtopic":
        return body + sep + rng.choice(lx.FILLER) + period
    raise ValueError(f"unknown edit {kind!r}; use drop_period, add_repeat or add_offtopic")


def _stats(xs: list[float]) -> dict:
    return {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs), "n": len(xs)}


def _spearman(x: list[float], y: list[float]) -> float:
    return float(spearmanr(x, y)[0]) if len(set(x)) > 1 and len(set(y)) > 1 else 0.0


def measure_properties(prompts: list[PromptRecord], seed: int = 0, k: int = 4, tokenizer=None,
                       gold: TestbedGold | None = None) -> dict:
    """Measure properties a/b/c on `prompts` (k SFT samples each). Lengths are in tokens when `tokenizer` is given,
    else in words; random responses are random tokens (or random lexicon words without a tokenizer).

    Returns:
        {"a": {...}, "b": {...}, "c": {...}} of plain floats (JSON-ready); see the module docstring.
    """
    gold = gold or TestbedGold()
    rng = random.Random(seed)
    P, R, F = [], [], []
    for p in prompts:
        for r in sft_responses(p, k, rng):
            P.append(p.prompt), R.append(r), F.append(p.family)
    sft = gold.score(P, R)
    texts = [p.prompt for p in prompts]
    rand = gold.score(texts, random_responses(texts, rng, tokenizer=tokenizer))
    ref = gold.score(texts, [p.reference for p in prompts])
    a = {"sft": _stats(sft), "random": _stats(rand), "reference": _stats(ref),
         "sft_minus_random": statistics.fmean(sft) - statistics.fmean(rand),
         "per_family": {f: _stats([s for s, g in zip(sft, F) if g == f]) for f in TASK_FAMILIES}}
    b = _length_property(P, R, F, sft, gold, rng, tokenizer)
    return {"a": a, "b": b, "c": _family_property(prompts, gold, rng)}


def _lengths(responses: list[str], tokenizer) -> list[int]:
    if tokenizer is None:
        return [len(words_of(r)) for r in responses]
    return [len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"]]


def _length_property(P, R, F, sft, gold, rng, tokenizer) -> dict:
    """Spearman(length, gold) inside the SFT samples, and what padding with repeats does to gold."""
    lengths = _lengths(R, tokenizer)
    per_family = {f: _spearman([n for n, g in zip(lengths, F) if g == f], [s for s, g in zip(sft, F) if g == f])
                  for f in TASK_FAMILIES}
    padded = {}
    for k in (1, 2, 4, 8):
        after = gold.score(P, [pad_with_repeats(r, k, rng) for r in R])
        drops = [b - a for a, b in zip(sft, after)]
        padded[str(k)] = {"mean_change": statistics.fmean(drops), "frac_lower": sum(d < 0 for d in drops) / len(drops)}
    return {"spearman_length_gold": _spearman(lengths, sft), "spearman_per_family": per_family,
            "length_unit": "tokens" if tokenizer is not None else "words",
            "mean_length": statistics.fmean(lengths), "pad_with_repeats": padded}


def _family_property(prompts: list[PromptRecord], gold: TestbedGold, rng: random.Random) -> dict:
    """Mean gold change per family of three standard edits applied to reference responses."""
    out: dict[str, dict[str, float]] = {}
    for kind in ("drop_period", "add_repeat", "add_offtopic"):
        out[kind] = {}
        for fam in TASK_FAMILIES:
            ps = [p for p in prompts if p.family == fam]
            if not ps:
                continue
            before = gold.score([p.prompt for p in ps], [p.reference for p in ps])
            after = gold.score([p.prompt for p in ps], [edit(p.reference, kind, rng) for p in ps])
            out[kind][fam] = statistics.fmean(b - a for a, b in zip(before, after))
    # How unequally families react: largest over smallest absolute change (1.0 would mean identical rubrics).
    spread = {kind: max(abs(x) for x in v.values()) / max(1e-9, min(abs(x) for x in v.values()))
              for kind, v in out.items() if v}
    return {"edit_change": out, "ratio_max_min": spread}
