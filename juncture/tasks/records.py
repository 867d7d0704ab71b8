"""Read records from a data file and report every bad one at once.

Formats, by suffix: `.jsonl` (one JSON object per line; blank lines skipped), `.json` (an array
of objects, or an object holding one under "data"/"examples"/"questions"/"problems"), `.parquet`/
`.pq` (one row per record; a null counts as a missing field), `.csv` (a header row; UTF-8, BOM
allowed), or a directory of `.json` files, one record each (the original MATH release).

Each record comes with a location for messages: `file:LINE` for JSONL and CSV, `file: row N` for
Parquet, `file: record N` inside a JSON array, the file itself for a directory's files.

A malformed file is never loaded in part: `Problems` collects every bad record (unparsable line,
missing field, wrong type) and raises one TaskDataError that lists them all, each with file,
line and field, so a user fixes the file in one pass instead of one error per run.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from juncture import jsonl
from juncture.tasks.base import TaskDataError

PARQUET_SUFFIXES = (".parquet", ".pq")
SUFFIXES = (".jsonl", ".json", *PARQUET_SUFFIXES, ".csv")
_JSON_CONTAINER_KEYS = ("data", "examples", "questions", "problems")
MAX_LISTED = 30  # a file with thousands of bad lines lists the first ones and a count


class Problems:
    """Collects `where: field 'x' problem` messages; `raise_if_any` raises them as one error."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def field(self, where: str, name: str, problem: str) -> None:
        self.add(where, f"field '{name}' {problem}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_LISTED]
        more = len(self.items) - len(shown)
        lines = [f"{self.path}: {len(self.items)} bad record(s); nothing was loaded. Fix them and run again:", *shown]
        if more:
            lines.append(f"… and {more} more")
        raise TaskDataError("\n  ".join(lines))


def _loads(where: str, raw: bytes, problems: Problems) -> Iterator[tuple[str, object]]:
    """(where, value) of one JSON text, or nothing and a problem if it does not parse."""
    try:
        yield where, json.loads(raw)
    except ValueError as e:  # also invalid UTF-8
        problems.add(where, f"invalid JSON: {e}")


def _objects(located: Iterable[tuple[str, object]], problems: Problems) -> Iterator[tuple[str, dict]]:
    """The JSON objects among `located`; any other value is a problem at its location."""
    for where, record in located:
        if isinstance(record, dict):
            yield where, record
        else:
            problems.add(where, f"expected a JSON object, got {type(record).__name__}")


def _jsonl(path: Path, problems: Problems) -> Iterator[tuple[str, dict]]:
    yield from _objects(jsonl.read(path, on_bad=lambda where, e: problems.add(where, f"invalid JSON: {e}")), problems)


def _json(path: Path, problems: Problems) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(path.read_bytes())
    except ValueError as e:
        raise TaskDataError(f"{path}: invalid JSON: {e}") from None
    if isinstance(data, dict):
        inner = next((data[k] for k in _JSON_CONTAINER_KEYS if isinstance(data.get(k), list)), None)
        data = inner if inner is not None else [data]
    if not isinstance(data, list):
        raise TaskDataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    yield from _objects(((f"{path}: record {n}", record) for n, record in enumerate(data, 1)), problems)


def _parquet(path: Path, problems: Problems) -> Iterator[tuple[str, dict]]:
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise TaskDataError(f"{path}: not a readable Parquet file: {e}") from None
    for n, row in enumerate(rows, 1):
        yield f"{path}: row {n}", {k: v for k, v in row.items() if v is not None}


def _csv(path: Path, problems: Problems) -> Iterator[tuple[str, dict]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            start = 2
            for row in reader:
                where = f"{path}:{start}"
                start = reader.line_num + 1
                if None in row:
                    problems.add(where, f"{len(row[None])} more value(s) than the header has columns")
                    continue
                yield where, {k: v for k, v in row.items() if v is not None}
    except UnicodeDecodeError as e:
        raise TaskDataError(f"{path}: not UTF-8 text: {e}") from None
    except csv.Error as e:
        raise TaskDataError(f"{path}: not a readable CSV file: {e}") from None


def _directory(path: Path, problems: Problems) -> Iterator[tuple[str, dict]]:
    files = sorted(path.rglob("*.json"))
    if not files:
        raise TaskDataError(f"{path}: the directory holds no .json files")
    yield from _objects((pair for file in files for pair in _loads(str(file), file.read_bytes(), problems)), problems)


def read_records(path: str | Path, problems: Problems | None = None) -> Iterator[tuple[str, dict]]:
    """(location, record) pairs in file order; unreadable records go to `problems` (raised by the caller)."""
    path = Path(path).expanduser()
    problems = problems if problems is not None else Problems(path)
    if path.is_dir():
        yield from _directory(path, problems)
        return
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    readers = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, **dict.fromkeys(PARQUET_SUFFIXES, _parquet)}
    if suffix not in readers:
        raise TaskDataError(f"{path}: unknown data format {suffix!r}; use one of {', '.join(SUFFIXES)} or a directory")
    yield from readers[suffix](path, problems)
