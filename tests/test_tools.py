"""build_tools, BM25 search over real corpora, and the calculator."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from juncture.config import SearchToolConfig, ToolsConfig
from juncture.tools import KNOWN_TOOLS, ToolResult, build_tools
from juncture.tools import search as search_mod
from juncture.tools.calculator import CalculatorTool
from juncture.tools.python_sandbox import PythonTool
from juncture.tools.search import SearchTool

arbitrary_text = st.one_of(
    st.text(),
    st.text(st.characters(exclude_categories=())),  # includes lone surrogates
    st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.text(max_size=5000).map(lambda s: s * 20),
)


@pytest.fixture(scope="module", autouse=True)
def search_cache(tmp_path_factory):
    """A private index cache, restored afterwards so other test modules see the real one."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("juncture-cache")
        mp.setenv("JUNCTURE_CACHE", str(root))
        yield root / "search"


@pytest.fixture(scope="module")
def wiki() -> SearchTool:
    return SearchTool(SearchToolConfig())


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


# build_tools ---------------------------------------------------------------------------------


def test_build_tools_instantiates_by_name():
    tools = build_tools(["python", "calculator"], ToolsConfig())
    assert list(tools) == ["python", "calculator"]
    assert isinstance(tools["python"], PythonTool) and isinstance(tools["calculator"], CalculatorTool)
    assert all(tool.name == name for name, tool in tools.items())
    assert set(KNOWN_TOOLS) == {"python", "search", "calculator"}


def test_build_tools_passes_config(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"title": "A", "text": "alpha beta"}])
    cfg = ToolsConfig.model_validate(
        {"python": {"timeout_s": 2.0}, "search": {"corpus": str(corpus), "top_k": 1}}
    )
    tools = build_tools(["python", "search"], cfg)
    assert tools["python"].cfg.timeout_s == 2.0
    assert tools["search"]("alpha").output == "1. A: alpha beta"


def test_build_tools_unknown_name():
    with pytest.raises(ValueError, match=r"'browser'.*python, search, calculator"):
        build_tools(["python", "browser"], ToolsConfig())


# search --------------------------------------------------------------------------------------


def test_wiki_search_finds_mona_lisa(wiki):
    r = wiki("Who painted the Mona Lisa?")
    assert r.ok and r.error is None
    lines = r.output.splitlines()
    assert lines[0].startswith("1. Mona Lisa: ") and "Leonardo da Vinci" in lines[0]
    assert len(lines) == 3 and lines[2].startswith("3. ")


def test_wiki_search_respects_top_k_and_doc_length():
    tool = SearchTool(SearchToolConfig(top_k=2, max_chars_per_doc=40))
    lines = tool("Mona Lisa painting Leonardo").output.splitlines()
    assert len(lines) == 2
    for line in lines:
        text = line.split(": ", 1)[1]
        assert len(text) <= 41 and text.endswith("…")


def test_second_build_is_cheap(wiki):
    start = time.perf_counter()
    assert SearchTool(SearchToolConfig()).index is wiki.index
    assert time.perf_counter() - start < 0.1


def test_search_edge_queries(wiki):
    assert wiki("   ") == ToolResult("error: empty search query", ok=False, error="empty")
    assert wiki("the of and") == ToolResult("no results", ok=True)
    assert wiki("zqxjvwkq") == ToolResult("no results", ok=True)
    assert wiki("Mona Lisa " + "x" * 100_000).output.startswith("1. Mona Lisa")


def test_jsonl_corpus(tmp_path):
    corpus = write_jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"title": "Zebra", "text": "Zebras are African equines with black-and-white stripes."},
            "",
            {"title": "Volcano", "text": "A volcano is a rupture in the crust of a planet.", "id": 7},
            {"title": "Stripes", "text": "Stripes appear on many animals."},
        ],
    )
    tool = SearchTool(SearchToolConfig(corpus=str(corpus), top_k=5))
    assert tool("volcano crust").output == "1. Volcano: A volcano is a rupture in the crust of a planet."
    assert tool("stripes").output.splitlines()[0].startswith(("1. Stripes", "1. Zebra"))
    assert len(tool("stripes").output.splitlines()) == 2


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"title": "B", "text": ', "not valid JSON"),
        ('{"title": "B"}', "string fields 'title' and 'text'"),
        ('["B", "text"]', "string fields 'title' and 'text'"),
        ('{"title": "B", "text": 3}', "string fields 'title' and 'text'"),
    ],
)
def test_bad_jsonl_record_names_file_and_line(tmp_path, bad_line, message):
    corpus = write_jsonl(tmp_path / "bad.jsonl", [{"title": "A", "text": "fine"}, bad_line])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: .*{message}"):
        SearchTool(SearchToolConfig(corpus=str(corpus)))


def test_missing_or_empty_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        SearchTool(SearchToolConfig(corpus=str(tmp_path / "nope.jsonl")))
    with pytest.raises(ValueError, match="no records"):
        SearchTool(SearchToolConfig(corpus=str(write_jsonl(tmp_path / "empty.jsonl", [""]))))


def test_index_is_cached_on_disk_and_rebuilt_when_the_file_changes(tmp_path, search_cache, monkeypatch):
    corpus = write_jsonl(tmp_path / "disk.jsonl", [{"title": "Old", "text": "original words"}])
    SearchTool(SearchToolConfig(corpus=str(corpus)))
    assert len(list(search_cache.glob("disk-*"))) == 1

    monkeypatch.setattr(search_mod, "_INDEXES", {})
    monkeypatch.setattr(search_mod, "_build", lambda *a: pytest.fail("should load from the disk cache"))
    assert SearchTool(SearchToolConfig(corpus=str(corpus)))("original").output == "1. Old: original words"

    monkeypatch.undo()
    write_jsonl(corpus, [{"title": "New", "text": "replacement words here"}])
    os.utime(corpus, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert SearchTool(SearchToolConfig(corpus=str(corpus)))("words").output.startswith("1. New")
    assert len(list(search_cache.glob("disk-*"))) == 2


# calculator ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("1 + 2", "3"),
        ("2 ** 10", "1024"),
        ("-(3 - 5) * 4", "8"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("1 / 4", "0.25"),
        ("(1 + 2) * (3 + 4.5)", "22.5"),
        ("2 ** -1", "0.5"),
        ("+1_000", "1000"),
        (" 3*3 \n", "9"),
    ],
)
def test_calculator(expr, expected):
    assert CalculatorTool()(expr) == ToolResult(expected, ok=True)


@pytest.mark.parametrize(
    ("expr", "error", "message"),
    [
        ("1 / 0", "exception", "division by zero"),
        ("5 % 0", "exception", "division by zero"),
        ("9 ** 9 ** 9", "exception", "too large"),
        ("10 ** 400 * 1.0", "exception", "too large"),
        ("1e308 * 10", "exception", "not a finite number"),
        ("(-8) ** 0.5", "exception", "not a real number"),
        ("2 ^ 3", "bad_query", "use **"),
        ("__import__('os').system('echo hi')", "bad_query", "unsupported expression"),
        ("x + 1", "bad_query", "unsupported expression"),
        ("True + 1", "bad_query", "unsupported expression"),
        ("1 +", "syntax", "not a valid arithmetic expression"),
        ("(" * 300 + "1" + ")" * 300, "syntax", "not a valid arithmetic expression"),
        ("1+" * 600 + "1", "bad_query", "longer than"),
        ("", "empty", "empty"),
    ],
)
def test_calculator_errors(expr, error, message):
    start = time.perf_counter()
    r = CalculatorTool()(expr)
    assert time.perf_counter() - start < 1
    assert (r.ok, r.error) == (False, error), r.output
    assert r.output.startswith("error: ") and message in r.output


def test_calculator_deep_nesting_does_not_raise():
    assert CalculatorTool()("-" * 998 + "1").output in ("1", "error: expression is nested too deeply")


# never raise ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(arbitrary_text)
def test_search_and_calculator_never_raise(wiki, query):
    for tool in (wiki, CalculatorTool()):
        r = tool(query)
        assert isinstance(r, ToolResult) and isinstance(r.output, str)
        assert r.ok or r.error
