"""Reading and writing record files: JSON lines (plain or .gz) and JSON arrays, with errors that name file and line.

`iter_records` is the one reader every loader uses. It *yields* per-row problems (a malformed line, invalid UTF-8) as
`DataError` values so a loader in skip mode can count them and go on, and *raises* problems that end the file (a corrupt
gzip stream, a broken JSON array), since no later row can be trusted after those.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data. The message starts with `file:line` (or the hub dataset and row index).

    Attributes:
        path: the file (or hub dataset label) the row came from.
        line: 1-based line of a JSON-lines file, the line where an array element starts, or the hub row index.
        reason: short machine-readable category, e.g. "malformed_json", "missing_field", "empty_response".
    """

    def __init__(self, path: str, line: int | None, reason: str, message: str):
        self.path, self.line, self.reason, self.detail = str(path), line, reason, message
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _first_char(path: Path) -> str:
    """First non-whitespace character of the file ('' when empty); tells a JSON array from JSON lines."""
    try:
        with _open_binary(path) as f:
            head = f.read(4096)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(str(path), None, "corrupt_file", f"cannot read file: {e}") from e
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return text[:1]


def _iter_lines(path: Path) -> Iterator[tuple[int, Any]]:
    # Binary iteration splits on b"\n" only; text mode / str.splitlines would also split on U+2028 inside strings.
    line_no = 0
    try:
        with _open_binary(path) as f:
            for line_no, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad = raw[e.start:e.start + 4]
                    yield line_no, DataError(str(path), line_no, "invalid_utf8",
                                             f"invalid UTF-8 at byte {e.start} of the line: {bad!r}")
                    continue
                text = text.lstrip("\ufeff") if line_no == 1 else text
                if not text.strip():
                    continue  # blank lines carry no record
                try:
                    yield line_no, json.loads(text)
                except json.JSONDecodeError as e:
                    yield line_no, DataError(str(path), line_no, "malformed_json", f"malformed JSON: {e.msg} "
                                             f"(column {e.colno}): {text.strip()[:80]!r}")
    except (OSError, EOFError, zlib.error) as e:
        # gzip.BadGzipFile is an OSError; a truncated stream raises EOFError.
        raise DataError(str(path), line_no + 1, "corrupt_file", f"cannot read file past this line: {e}") from e


def _line_of_byte(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array, each with the line where it starts (found via raw_decode offsets)."""
    try:
        with _open_binary(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(str(path), None, "corrupt_file", f"cannot read file: {e}") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(str(path), _line_of_byte(data, e.start), "invalid_utf8",
                        f"invalid UTF-8 at byte {e.start}: {data[e.start:e.start + 4]!r}") from e
    dec = json.JSONDecoder()
    pos, line, last = text.index("[") + 1, 1, 0
    while True:
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == "]":
            return
        line, last = line + text.count("\n", last, pos), pos
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(str(path), e.lineno, "malformed_json", f"malformed JSON array element: {e.msg} "
                            f"(column {e.colno}); a broken array cannot be resumed, fix the file") from e
        yield line, obj
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "]":
            raise DataError(str(path), line + text.count("\n", last, pos), "malformed_json",
                            "expected ',' or ']' after an array element")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield `(line_no, value)` for every record of a JSON-lines file or a JSON-array file (either may be .gz).

    A value is the decoded JSON, or a `DataError` for a row that could not be decoded (malformed JSON, invalid
    UTF-8 in that line). Problems that end the file (missing file, corrupt gzip, broken JSON array) are raised.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), None, "no_file", "no such file")
    if _first_char(p) == "[":
        yield from _iter_json_array(p)
    else:
        yield from _iter_lines(p)


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield `(line_no, dict)` from a JSON-lines file (plain or .gz; a JSON array file works too).

    Raises:
        DataError: naming file and line, for a malformed line, invalid UTF-8, or a record that is not an object.
    """
    for line, value in iter_records(path):
        if isinstance(value, DataError):
            raise value
        if not isinstance(value, dict):
            raise DataError(str(path), line, "not_an_object", f"expected a JSON object, got {type(value).__name__}")
        yield line, value


def _to_jsonable(record: Any) -> Any:
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    if isinstance(record, dict):
        return record
    raise TypeError(f"write_jsonl: records must be dataclass instances or dicts, got {type(record).__name__}")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """Write records (dataclass instances or dicts), one JSON object per line; `.gz` paths are gzipped.

    Atomic: writes a temporary file beside `path` and renames it over `path`, so a reader never sees a half
    file and a crash leaves any old file intact. Parent folders are created. Returns the path written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with (gzip.open(tmp, "wt", encoding="utf-8") if p.suffix == ".gz"
              else open(tmp, "w", encoding="utf-8")) as f:
            for rec in records:
                f.write(json.dumps(_to_jsonable(rec), ensure_ascii=False) + "\n")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
