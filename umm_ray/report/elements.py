"""The report's content types: sections of paragraphs, tables, images and preformatted blocks.

Both renderers (`markdown.py`, `html.py`) and `document.write_report`, which calls them, import these; keeping them
in their own module lets `document` import the renderers at top level without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Section", "Table"]


@dataclass
class Table:
    """A table: `rows` are lists of already-formatted cells, one per header; `caption` goes under it."""

    headers: list[str]
    rows: list[list[str]]
    caption: str = ""

    def __post_init__(self):
        for i, row in enumerate(self.rows):
            if len(row) != len(self.headers):
                raise ValueError(f"Table row {i} has {len(row)} cells but there are {len(self.headers)} headers")


@dataclass
class Section:
    """One titled part of the report. Paragraphs may use `code` and **bold** inline markup (rendered in both)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    code: str = ""  # preformatted block (config YAML, versions)
