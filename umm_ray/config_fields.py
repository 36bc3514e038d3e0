"""`opt`: the one way a config dataclass field is declared (default, help text, validation bounds).

Its own module so that config sections kept in other files (`config_dmoe.py`) and `config.py`, which imports them,
share it without an import cycle.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["opt"]


def opt(default: Any, help: str, *, choices: tuple | None = None, lo: float | None = None,
        hi: float | None = None, keyed_at_default: bool = True) -> Any:
    """A dataclass field with help text and optional validation bounds (inclusive).

    keyed_at_default=False: a stage that reads the key leaves it out of its cache key while it holds its default
    (`umm_ray.pipeline.config_values`), so adding a key whose default keeps the old behaviour keeps old stage keys.
    """
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "keyed_at_default": keyed_at_default}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)
