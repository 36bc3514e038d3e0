"""Capability-wise preference labels on the testbed: the gold rubric's terms play DMoERM's LLM judge.

For a labelled pair, each rubric term (`gold.rubric_terms`) gives its own pairwise label: the response with more
coverage / precision / format, or less budget excess / repetition, wins that capability. As in DMoERM, where a judge
is asked twice with the responses swapped and inconsistent answers are dropped, uncertain comparisons are dropped:
here, terms differing by at most `near_tie`. Each kept label is then flipped with probability `noise` (the overall
labels' noise rate), so the capability labels are no cleaner than the overall ones.

    caps = gold_capability_pairs(pairs, noise=0.25, near_tie=0.05, seed=0)
    caps["list"]["coverage"]   # -> [PreferencePair, ...]: chosen = more coverage (then noised)
"""

from __future__ import annotations

import random

from umm_ray.records import PreferencePair
from umm_ray.testbed.gold import Terms, rubric_terms
from umm_ray.testbed.world import parse_prompt

# capability -> (Terms field, +1 if more is better / -1 if less is better)
CAPABILITY_TERMS: dict[str, tuple[str, int]] = {
    "coverage": ("coverage", +1),
    "precision": ("precision", +1),
    "format": ("format", +1),
    "length": ("excess", -1),
    "repetition": ("repetition", -1),
}
CAPABILITIES: tuple[str, ...] = tuple(CAPABILITY_TERMS)

__all__ = ["CAPABILITIES", "CAPABILITY_TERMS", "capability_margin", "gold_capability_pairs"]


def capability_margin(cap: str, a: Terms, b: Terms) -> float:
    """How much better response a is than b on capability `cap` (> 0: a wins), in the term's own units."""
    field, sign = CAPABILITY_TERMS[cap]
    return sign * (getattr(a, field) - getattr(b, field))


def gold_capability_pairs(pairs: list[PreferencePair], noise: float, near_tie: float, seed: int,
                             capabilities: tuple[str, ...] = CAPABILITIES
                             ) -> dict[str, dict[str, list[PreferencePair]]]:
    """Capability labels of testbed pairs, by task (the pair's family) and capability.

    Args:
        pairs: testbed preference pairs (their overall label is ignored: each capability is judged afresh).
        noise: flip probability of each kept label, in [0, 0.5].
        near_tie: drop a capability label when |term difference| <= near_tie.
        seed: seeds the flips (one draw per pair and capability, kept or not, so flips do not depend on ties).
        capabilities: which rubric terms to label (names of CAPABILITY_TERMS).

    Returns:
        {task: {capability: [PreferencePair]}}; every capability key is present (possibly with an empty list), so
        the caller can say which one lacks pairs. Sources are "<pair source>#<capability>".

    Raises:
        ValueError: unknown capability, bad noise or near_tie, or a prompt the testbed did not make (named).
    """
    unknown = [c for c in capabilities if c not in CAPABILITY_TERMS]
    if unknown:
        raise ValueError(f"testbed capabilities {unknown} are not rubric terms; choose from {list(CAPABILITIES)}")
    if not 0.0 <= noise <= 0.5:
        raise ValueError(f"capability label noise must be in [0, 0.5], got {noise}")
    if near_tie < 0:
        raise ValueError(f"near_tie must be >= 0, got {near_tie}")
    rng = random.Random(seed)
    out: dict[str, dict[str, list[PreferencePair]]] = {}
    for i, p in enumerate(pairs):
        try:
            task = parse_prompt(p.prompt)
        except ValueError as e:
            raise ValueError(f"testbed capability labels: pair {i} ({p.source or 'no source'}): {e}") from None
        family = p.family or task.family
        ta, tb = rubric_terms(task, p.chosen), rubric_terms(task, p.rejected)
        by_cap = out.setdefault(family, {c: [] for c in capabilities})
        for cap in capabilities:
            flip = rng.random() < noise
            margin = capability_margin(cap, ta, tb)
            if abs(margin) <= near_tie:
                continue
            win, lose = (p.chosen, p.rejected) if (margin > 0) != flip else (p.rejected, p.chosen)
            by_cap[cap].append(PreferencePair(p.prompt, win, lose, source=f"{p.source}#{cap}", family=family))
    return out
