"""The project's documents stand on their own: every file they (or the code) point at is in the repository."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.splitlines() if (ROOT / p).is_file()]


TEXT_SUFFIXES = {".md", ".py", ".sh", ".yaml", ".toml", ""}
# A project document named anywhere in prose or code: `docs/x.md`, `README.md`, an upper-case `NAME.md §2` (output
# files such as `report/report.md` are lower-case and outside docs/, so they are not matched).
MD_REF = re.compile(r"(?<![\w/.-])(docs/[\w./-]+\.md|[A-Z][A-Z_-]*\.md)\b")
# [text](target) links in markdown.
MD_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def references() -> list[tuple[Path, int, str, Path]]:
    """(file, line, reference, resolved path) for every markdown file or link target named in the project."""
    refs = []
    for f in tracked_files():
        if f.suffix not in TEXT_SUFFIXES or f.name == "test_docs.py" or ".ci" in f.parts:
            continue
        for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            for ref in MD_REF.findall(line):
                if "://" in line and ref in line.split("://", 1)[1]:
                    continue  # a URL's path, not a file of ours
                here, top = (f.parent / ref), (ROOT / ref)
                refs.append((f, i, ref, here if here.exists() else top))
            if f.suffix == ".md":
                for target in MD_LINK.findall(line):
                    if "://" not in target and not target.startswith("mailto:"):
                        refs.append((f, i, target, f.parent / target))
    return refs


def test_every_referenced_document_exists():
    refs = references()
    assert len(refs) >= 5, "the reference scanner found almost nothing: its patterns are broken"
    missing = [f"{f.relative_to(ROOT)}:{i}: {ref}" for f, i, ref, path in refs if not path.exists()]
    assert not missing, "documents referenced but not in the project:\n" + "\n".join(missing)


def test_design_doc_sections_cited_exist():
    """`docs/design.md §3` in a docstring must name a section the design document has."""
    design = (ROOT / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^#+ (\d+(?:\.\d+)*)\.? ", design, flags=re.M))
    assert {"1", "2", "3", "4"} <= sections
    bad = []
    for f in tracked_files():
        if f.suffix not in TEXT_SUFFIXES:
            continue
        for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            for sec in re.findall(r"design\.md §(\d+(?:\.\d+)*)", line):
                if sec not in sections:
                    bad.append(f"{f.relative_to(ROOT)}:{i}: §{sec}")
    assert not bad, f"cited design sections that do not exist (have {sorted(sections)}):\n" + "\n".join(bad)


def test_no_design_doc_outside_the_project():
    """A user's clone has nothing beside it: no upper-case design file outside the project may be cited (the design
    notes are docs/design.md)."""
    hits = [f"{f.relative_to(ROOT)}:{i}" for f in tracked_files()
            if f.suffix in {".md", ".py"} and f.name != "test_docs.py"
            for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1)
            if re.search(r"(?<![\w/])" + "DESIGN" + r"\.md", line)]
    assert not hits, f"an upper-case design file outside the project is referenced at: {hits}"
