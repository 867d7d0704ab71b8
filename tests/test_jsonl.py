"""JSON Lines reading and atomic writing, plain and gzipped."""

from __future__ import annotations

import gzip

import pytest

from juncture import jsonl
from juncture.tasks.base import TaskDataError


@pytest.mark.parametrize("name", ["records.jsonl", "records.jsonl.gz"])
def test_round_trip_skips_blank_lines(tmp_path, name):
    records = [{"a": 1, "text": "é ü"}, [1, 2], "plain", None]
    path = jsonl.write(tmp_path / name, records, compact=True)
    assert path == tmp_path / name and not list(tmp_path.glob(".*.tmp"))
    if name.endswith(".gz"):
        raw = gzip.decompress(path.read_bytes())
        assert raw.count(b"\n") == len(records)
        with gzip.open(path, "wb") as f:
            f.write(b"\n  \n" + raw + b"\n")
    else:
        path.write_text("\n  \n" + path.read_text() + "\n")
    got = list(jsonl.read(path))
    assert [value for _, value in got] == records
    assert [where for where, _ in got] == [f"{path}:{n}" for n in (3, 4, 5, 6)]


def test_a_bad_line_names_file_and_line_with_the_callers_error(tmp_path):
    path = tmp_path / "demos.jsonl"
    path.write_bytes(b'{"ok": 1}\n\n{"broken": \n')
    with pytest.raises(TaskDataError, match=r"demos\.jsonl:3: not valid JSON"):
        list(jsonl.read(path, TaskDataError))
    path.write_bytes(b'{"ok": 1}\n\xff\xfe\n')  # not UTF-8
    with pytest.raises(ValueError, match=r"demos\.jsonl:2: not valid JSON"):
        list(jsonl.read(path))


def test_a_file_that_is_not_gzip_is_named(tmp_path):
    path = tmp_path / "step_000001.jsonl.gz"
    path.write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match=r"step_000001\.jsonl\.gz: not a readable gzip file"):
        list(jsonl.read(path))
    with gzip.open(path, "wb") as f:
        f.write(b'{"step": 1}\n' * 100)
    path.write_bytes(path.read_bytes()[:-20])  # cut short, as by a crash
    with pytest.raises(ValueError, match="not a readable gzip file"):
        list(jsonl.read(path))


def test_a_write_that_fails_leaves_the_old_file(tmp_path):
    path = jsonl.write(tmp_path / "r.jsonl", [{"v": "old"}])

    def crash():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jsonl.write(path, [{"v": "new"}], before_publish=crash)
    assert [v for _, v in jsonl.read(path)] == [{"v": "old"}]
    jsonl.write(path, [{"v": "new"}])
    assert [v for _, v in jsonl.read(path)] == [{"v": "new"}]


def test_on_bad_reports_and_skips(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\nnot json\n\n{"step": 2}\n{"step": 3, "torn')
    bad = []
    got = [v for _, v in jsonl.read(path, on_bad=lambda where, e: bad.append((where, type(e).__name__)))]
    assert got == [{"step": 1}, {"step": 2}]
    assert bad == [(f"{path}:2", "JSONDecodeError"), (f"{path}:5", "JSONDecodeError")]
