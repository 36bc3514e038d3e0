"""`opt`: the one way a config dataclass field is declared (default, help text, validation bounds); `ConfigError`.

Its own module so that config sections kept in other files (`config_dmoe.py`) and `config.py`, which imports them,
share it without an import cycle.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["opt", "ConfigError"]


class ConfigError(ValueError):
    """A configuration key, type or value is wrong; the message names the key."""


def opt(default: Any, help: str, *, choices: tuple | None = None, lo: float | None = None,
        hi: float | None = None) -> Any:
    """A dataclass field with help text and optional validation bounds (inclusive)."""
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)
