"""`opt`: the one way a config dataclass field is declared (default, help text, validation bounds); `ConfigError`.

Its own module so that config sections kept in other files (`config_dmoe.py`) and `config.py`, which imports them,
share it without an import cycle.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["opt", "ConfigError", "is_int"]


class ConfigError(ValueError):
    """A configuration key, type or value is wrong; the message names the key."""


def opt(default: Any, help: str, *, choices: tuple | None = None, lo: float | None = None,
        hi: float | None = None, keyed_at_default: bool = True) -> Any:
    """A dataclass field with help text and optional validation bounds (inclusive).

    `keyed_at_default=False` leaves the key out of stage cache keys while it holds its default
    (`umm_ray.pipeline.config_values`): for a key added to a section that stages read whole, so runs cached before
    it existed keep their keys. Only for keys whose default reproduces the behaviour from before they existed.
    """
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "keyed_at_default": keyed_at_default}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def is_int(s: str) -> bool:
    """Whether the string `s` parses as an int (a CLI list item such as '4')."""
    try:
        int(s)
        return True
    except ValueError:
        return False
