"""The report's document model: sections of paragraphs, tables, images and preformatted blocks, rendered to both
Markdown (`markdown.py`, images as files beside it) and one self-contained HTML page (`html.py`, images inlined).
The content types themselves live in `elements.py`, below the renderers."""

from __future__ import annotations

from pathlib import Path

from umm_ray.report.elements import Section, Table
from umm_ray.report.html import render_html
from umm_ray.report.markdown import render_markdown

__all__ = ["Section", "Table", "write_report"]


def write_report(out_dir: str | Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    """Write report.md (images referenced by relative path) and report.html (images embedded as base64).

    Args:
        out_dir: destination directory (created).
        title: page title.
        sections: the content, in order.

    Returns:
        (markdown_path, html_path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, html = out / "report.md", out / "report.html"
    md.write_text(render_markdown(title, sections, relative_to=out))
    html.write_text(render_html(title, sections))
    return md, html
