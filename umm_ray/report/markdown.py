"""Render the report's sections as GitHub-flavoured Markdown (images linked by path relative to the report)."""

from __future__ import annotations

import os
from pathlib import Path

from umm_ray.report.elements import Section, Table


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_table(t: Table) -> str:
    """A pipe table with a caption line below."""
    lines = ["| " + " | ".join(_cell(h) for h in t.headers) + " |",
             "|" + "|".join("---" for _ in t.headers) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"*{t.caption}*"]
    return "\n".join(lines)


def render_markdown(title: str, sections: list[Section], relative_to: Path | None = None) -> str:
    """The whole report as Markdown text."""
    parts = [f"# {title}", ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        for p in s.paragraphs:
            parts += [p, ""]
        for t in s.tables:
            parts += [render_table(t), ""]
        for img in s.images:
            ref = os.path.relpath(img, relative_to) if relative_to else str(img)
            parts += [f"![{Path(img).stem}]({ref})", ""]
        if s.code:
            parts += ["```", s.code.rstrip("\n"), "```", ""]
    return "\n".join(parts)
