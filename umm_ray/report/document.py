"""The report's document model: sections of paragraphs, tables, images and preformatted blocks, rendered to both
Markdown (`markdown.py`, images as files beside it) and one self-contained HTML page (`html.py`, images inlined)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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


def write_report(out_dir: str | Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    """Write report.md (images referenced by relative path) and report.html (images embedded as base64).

    Args:
        out_dir: destination directory (created).
        title: page title.
        sections: the content, in order.

    Returns:
        (markdown_path, html_path).
    """
    from umm_ray.report.html import render_html
    from umm_ray.report.markdown import render_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, html = out / "report.md", out / "report.html"
    md.write_text(render_markdown(title, sections, relative_to=out))
    html.write_text(render_html(title, sections))
    return md, html
