"""Task sources: seeded disjoint splits, gold answers that score 1, and file errors that say where."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from juncture.config import TaskConfig
from juncture.rewards import score_answer
from juncture.tasks import Task, TaskDataError, build_tasks
from juncture.tasks.reasoning_gym_tasks import derive_seed

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"


def questions(tasks: list[Task]) -> set[str]:
    return {t.question for t in tasks}


# --- reasoning-gym ---------------------------------------------------------------------------


def test_chain_sum_splits_are_disjoint_and_deterministic():
    cfg = TaskConfig(name="reasoning_gym:chain_sum", train_size=300, eval_size=20, seed=3)
    train, evals = build_tasks(cfg)
    assert (len(train), len(evals)) == (300, 20)
    assert not questions(train) & questions(evals)
    assert len(questions(evals)) == 20
    assert len({t.id for t in train + evals}) == 320
    assert build_tasks(cfg) == (train, evals)
    other_train, _ = build_tasks(cfg.model_copy(update={"seed": 4}))
    assert [t.question for t in other_train] != [t.question for t in train]
    assert all(t.tools == ("python",) and t.verifier == "reasoning_gym" for t in train)


def test_chain_sum_eval_tops_up_when_the_question_space_is_small():
    # 1-digit a ± b has 200 questions; 150 train draws cover about half of them
    params = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    train, evals = build_tasks(TaskConfig(name="reasoning_gym:chain_sum", params=params, train_size=150, eval_size=20))
    assert len(evals) == 20 and not questions(train) & questions(evals)
    with pytest.raises(ValueError, match="eval questions distinct from train"):
        build_tasks(TaskConfig(name="reasoning_gym:chain_sum", params=params, train_size=3000, eval_size=20))


def test_nearby_rg_seeds_would_overlap_so_seeds_are_hashed():
    import reasoning_gym

    a, b = (reasoning_gym.create_dataset("chain_sum", size=3, seed=s) for s in (10, 11))
    assert a[1]["question"] == b[0]["question"]  # why seeds 2s and 2s+1 would not give disjoint splits
    assert len({derive_seed(0, "train"), derive_seed(0, "eval", 0), derive_seed(0, "eval", 1)}) == 3


def test_chain_sum_scoring_uses_the_generator():
    train, evals = build_tasks(TaskConfig(name="reasoning_gym:chain_sum", train_size=5, eval_size=5))
    for task in train + evals:
        assert score_answer(task, task.answer) == 1.0
        assert score_answer(task, str(int(task.answer) + 1)) < 1.0
        assert score_answer(task, "no idea") == 0.0
        assert score_answer(task, None) == 0.0
    # metadata survives a JSON round trip and still rescores: it names the entry, not just copies it
    task = evals[0]
    clone = dataclasses.replace(task, metadata=json.loads(json.dumps(task.metadata)))
    assert score_answer(clone, task.answer) == 1.0
    assert task.metadata["source"] == "reasoning_gym:chain_sum"
    assert task.metadata["entry"]["answer"] == task.answer


def test_reasoning_gym_bad_params():
    with pytest.raises(ValueError, match="task.params"):
        build_tasks(TaskConfig(name="reasoning_gym:chain_sum", params={"no_such_knob": 1}))


# --- wiki_qa ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wiki():
    return build_tasks(TaskConfig(name="wiki_qa", train_size=1000, eval_size=32))


def test_wiki_qa_gold_scores_one_and_splits_are_disjoint(wiki):
    train, evals = wiki
    assert (len(train), len(evals)) == (1000, 32)
    assert not questions(train) & questions(evals)
    assert not {t.answer for t in train} & {t.answer for t in evals}
    for task in train[:50] + evals:
        assert task.verifier == "exact_match" and task.tools == ("search",)
        assert task.answer.lower() not in task.question.lower()
        assert f"'{task.metadata['description']}'" in task.question  # the search query that finds it
        assert score_answer(task, task.answer) == 1.0
        assert score_answer(task, f"  the {task.answer.upper()}. ") == 1.0
        assert score_answer(task, "Atlantis") == 0.0
    assert build_tasks(TaskConfig(name="wiki_qa", train_size=1000, eval_size=32)) == wiki


def test_wiki_qa_qualifier_is_optional(wiki):
    task = next(t for t in wiki[0] if t.answer.endswith(")"))
    short = task.answer[: task.answer.rindex("(")].strip()
    assert score_answer(task, short) == 1.0


def test_wiki_qa_too_many_requested():
    with pytest.raises(ValueError, match="wiki_qa has"):
        build_tasks(TaskConfig(name="wiki_qa", train_size=100000))


# --- files -----------------------------------------------------------------------------------


def file_cfg(path, **kw) -> TaskConfig:
    return TaskConfig(name="file", path=str(path), **{"eval_size": 3, **kw})


def test_jsonl_tasks():
    train, evals = build_tasks(file_cfg(FIXTURES / "small.jsonl"))
    assert (len(train), len(evals)) == (5, 3)
    by_id = {t.id: t for t in train + evals}
    assert set(by_id) == {"add", "half", "pi", "capital", "colour", "small-6", "7", "big"}
    assert build_tasks(file_cfg(FIXTURES / "small.jsonl")) == (train, evals)
    assert by_id["add"].answer == "5" and by_id["add"].verifier == "math"
    assert by_id["pi"].answer == "3.14" and by_id["pi"].metadata["level"] == "easy"
    assert by_id["big"].verifier == "math" and score_answer(by_id["big"], "1000") == 1.0
    assert score_answer(by_id["half"], "0.5") == 1.0
    capital = by_id["capital"]
    assert (capital.verifier, capital.tools) == ("exact_match", ("search",))
    colour = by_id["colour"]
    assert (colour.answer, colour.metadata["answers"], colour.tools) == ("red", ["red", "blue", "yellow"], ())
    assert score_answer(colour, "Blue") == 1.0 and score_answer(colour, "green") == 0.0
    assert by_id["small-6"].tools == ("search",)


def test_file_verifier_override_and_caps():
    train, evals = build_tasks(file_cfg(FIXTURES / "small.jsonl", verifier="f1", train_size=2))
    assert len(train) == 2 and len(evals) == 3
    assert {t.verifier for t in train + evals} == {"f1"}


def test_split_field():
    train, evals = build_tasks(file_cfg(FIXTURES / "with_split.jsonl"))
    assert [t.answer for t in train] == ["4", "8"] and [t.answer for t in evals] == ["6"]


def test_parquet_tasks(tmp_path):
    path = tmp_path / "tasks.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"id": "a", "question": "2 + 2?", "answer": ["4", "four"], "split": "train"},
        {"id": "b", "question": "Capital of Peru?", "answer": ["Lima"], "split": "eval"},
        {"id": "c", "question": "3 + 3?", "answer": ["6"], "split": "train"},
    ]), path)
    train, evals = build_tasks(file_cfg(path))
    assert [t.id for t in train] == ["a", "c"] and [t.id for t in evals] == ["b"]
    assert train[0].metadata["answers"] == ["4", "four"] and train[0].verifier == "exact_match"
    assert score_answer(train[0], "Four") == 1.0


def test_parquet_null_is_a_missing_field(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "q1", "answer": "a"}, {"question": "q2", "answer": None}]), path)
    with pytest.raises(TaskDataError, match=r"bad\.parquet: row 2: field 'answer' is missing"):
        build_tasks(file_cfg(path))


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "q", "answer": "a"}', '{"question": "q2", "answer": "b"', "{}"], r":2: invalid JSON"),
        (['{"question": "q", "answer": "a"}', "", '{"question": "q2"}'], r":3: field 'answer' is missing"),
        (['{"question": "q", "answer": {"x": 1}}'], r":1: field 'answer' must be a string"),
        (['{"question": "q", "answer": true}'], r":1: field 'answer' must be a string"),
        (['{"question": "q", "answer": []}'], r":1: field 'answer' must be a string"),
        (['{"question": 5, "answer": "a"}'], r":1: field 'question' must be a non-empty string"),
        (['{"answer": "a"}'], r":1: field 'question' is missing"),
        (['{"question": "q", "anwser": "a"}'], r":1: field 'anwser' is not a task field"),
        (['{"question": "q", "answer": "a", "tools": ["shell"]}'], r":1: field 'tools' must be a list"),
        (['{"question": "q", "answer": "a", "metadata": [1]}'], r":1: field 'metadata' must be an object"),
        (['{"question": "q", "answer": "a", "split": "test"}'], r":1: field 'split' must be 'train' or 'eval'"),
        (['{"question": "q", "answer": "a", "split": "train"}', '{"question": "r", "answer": "b"}'],
         r":2: field 'split' must be given on every record or on none"),
        (['{"id": "x", "question": "q", "answer": "a"}', '{"id": "x", "question": "r", "answer": "b"}'],
         r":2: field 'id' 'x' repeats the id at .*:1"),
        (['["question", "answer"]'], r":1: expected a JSON object"),
    ],
)
def test_malformed_lines_name_file_line_and_field(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskDataError, match=rf"bad\.jsonl{message}"):
        build_tasks(file_cfg(path))


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_tasks(file_cfg(tmp_path / "missing.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TaskDataError, match="no tasks"):
        build_tasks(file_cfg(empty))
    with pytest.raises(TaskDataError, match="both splits need at least one"):
        build_tasks(file_cfg(FIXTURES / "small.jsonl", eval_size=8))
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(TaskDataError, match="not a readable Parquet file"):
        build_tasks(file_cfg(not_parquet))


# --- toy and dispatch ------------------------------------------------------------------------


def test_toy_even_tokens():
    train, evals = build_tasks(TaskConfig(name="toy:even_tokens", train_size=4, eval_size=2))
    assert len({t.id for t in train + evals}) == 6
    assert not questions(train) & questions(evals)
    task = train[0]
    assert (task.verifier, task.answer, task.tools) == ("even_tokens", "", ())
    assert score_answer(task, None, [2, 3, 4, 6]) == 0.75
    with pytest.raises(ValueError, match="verifier must be 'auto'"):
        build_tasks(TaskConfig(name="toy:even_tokens", verifier="math"))


@pytest.mark.parametrize("name", ["nope", "toy:odd_tokens", "reasoning_gym:"])
def test_unknown_task_name(name):
    with pytest.raises(ValueError, match="unknown task.name"):
        build_tasks(TaskConfig(name=name))
