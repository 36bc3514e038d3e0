"""Typed records passed between stages, and the scorer interface every reward source implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PreferencePair:
    """One preference comparison: `chosen` is preferred over `rejected` for `prompt`.

    `source` says where it came from (e.g. "hh.jsonl.gz:17") so errors and reports can point back to it.
    `family` is the testbed task family when known (instruction regime), else "".
    """

    prompt: str
    chosen: str
    rejected: str
    source: str = ""
    family: str = ""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt for SFT, PPO or Best-of-N. `reference` is an optional reference response."""

    prompt: str
    family: str = ""
    reference: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores responses: a learned RM, an ensemble, the testbed's gold, a remote endpoint."""

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Return one float per (prompt, response) pair, in order."""
        ...


@dataclass
class Rollout:
    """A batch of generated responses, as produced by a RolloutActor.

    All lists have length B. `response_logprobs[i]` has len(response_ids[i]) entries: the sampling engine's
    log-probabilities of the tokens it chose (behaviour policy), or None when the engine did not return them.
    `response_ids` include the EOS token when generation stopped on it.
    """

    prompts: list[str]
    responses: list[str]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    response_logprobs: list[list[float]] | None = None
