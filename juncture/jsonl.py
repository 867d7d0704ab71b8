"""JSON Lines files, plain or gzipped (by the `.gz` suffix).

One reader, so every file juncture reads (trajectories, trees, demonstrations, search corpora)
names the file and line of a bad record the same way; one writer that publishes by rename, so
a crash never leaves half a file where a reader (a resumed run, the report) would find it.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


def _open(path: Path, mode: str, gz: bool):
    return gzip.open(path, mode) if gz else open(path, mode)


def read(path: str | Path, error: type[Exception] = ValueError,
         on_bad: Callable[[str, ValueError], None] | None = None) -> Iterator[tuple[str, object]]:
    """(where, value) for every non-blank line, where = "path:line".

    A line that is not JSON raises `error`, or, with `on_bad`, is passed to it (where, the parse error)
    and skipped: for readers that collect every problem, or tolerate a torn last line.
    """
    path = Path(path)
    try:
        with _open(path, "rb", path.suffix == ".gz") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError as e:  # also invalid UTF-8
                    if on_bad is None:
                        raise error(f"{path}:{n}: not valid JSON: {e}") from None
                    on_bad(f"{path}:{n}", e)
                    continue
                yield f"{path}:{n}", value
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise error(f"{path}: not a readable gzip file: {e}") from None


def write(path: str | Path, records: Iterable[object], compact: bool = False,
          before_publish: Callable[[], None] | None = None) -> Path:
    """Write one JSON line per record to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    separators = (",", ":") if compact else None
    with _open(tmp, "wt", path.suffix == ".gz") as f:
        for record in records:
            f.write(json.dumps(record, separators=separators) + "\n")
        if before_publish is not None:
            before_publish()
    os.replace(tmp, path)
    return path
