"""The alignment invariant of trajectories, across tool outputs and branches."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from juncture.tree import Source, ToolCall, Trajectory, read_jsonl, write_jsonl

# A trajectory is built from segments: (source, n_tokens); model segments carry log-probs.
segments = st.lists(
    st.tuples(st.sampled_from([Source.MODEL, Source.TOOL]), st.integers(min_value=1, max_value=6)),
    min_size=1, max_size=8,
)


def build(segs, prompt_len=3) -> Trajectory:
    t = Trajectory.from_prompt(list(range(100, 100 + prompt_len)), "t0", "g0", "task0")
    tok = 1000
    for source, n in segs:
        ids = list(range(tok, tok + n))
        tok += n
        if source == Source.MODEL:
            t.append(ids, Source.MODEL, [-0.5] * n, [1.0] * n)
        else:
            start = len(t)
            t.append(ids, Source.TOOL)
            t.tool_calls.append(ToolCall("python", "x", "out", True, None, t.turn, start, len(t)))
            t.new_turn()
    return t


@given(segments)
def test_arrays_stay_aligned_across_tool_outputs(segs):
    t = build(segs)
    t.check()
    n = len(t.tokens)
    assert len(t.logprobs) == len(t.entropies) == len(t.sources) == len(t.turns) == len(t.loss_mask) == n
    for s, lp, m in zip(t.sources, t.logprobs, t.loss_mask, strict=True):
        assert (s == Source.MODEL) == (not math.isnan(lp)) == bool(m)
    # a token's turn = number of tool results completed before its segment
    expected, done = [0] * t.prompt_len, 0
    for source, n in segs:
        expected += [done] * n
        done += source == Source.TOOL
    assert t.turns == expected


@given(segments, st.data())
def test_branch_shares_parent_prefix_exactly(segs, data):
    t = build(segs)
    model_positions = [i for i, s in enumerate(t.sources) if s == Source.MODEL]
    if not model_positions:
        with pytest.raises(ValueError):
            t.branch(t.prompt_len, "b")
        return
    pos = data.draw(st.sampled_from(model_positions))
    b = t.branch(pos, "b0")
    b.check()
    assert b.parent_id == "t0" and b.fork_pos == pos and b.kind == "branch"
    for name in ("tokens", "sources", "turns", "loss_mask"):
        assert getattr(b, name) == getattr(t, name)[: pos + 1]
    assert b.logprobs == t.logprobs[: pos + 1] or all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(b.logprobs, t.logprobs[: pos + 1], strict=False)
    )
    # only tool calls whose results lie wholly inside the prefix are kept (never re-executed)
    assert all(c.result_end <= pos + 1 for c in b.tool_calls)
    assert len(b.tool_calls) == sum(1 for c in t.tool_calls if c.result_end <= pos + 1)
    assert b.turn == t.turns[pos]


def test_branch_rejects_tool_and_prompt_positions():
    t = build([(Source.MODEL, 2), (Source.TOOL, 2), (Source.MODEL, 1)])
    with pytest.raises(ValueError, match="TOOL"):
        t.branch(5, "b")
    with pytest.raises(ValueError, match="outside"):
        t.branch(0, "b")


def test_append_refuses_misaligned_input():
    t = build([])
    with pytest.raises(ValueError):
        t.append([1, 2], Source.MODEL, [0.0], [0.0, 0.0])
    with pytest.raises(ValueError):
        t.append([1], Source.TOOL, [0.0], None)


def test_check_catches_corruption():
    t = build([(Source.MODEL, 3)])
    t.logprobs.pop()
    with pytest.raises(AssertionError, match="logprobs"):
        t.check()


@settings(max_examples=25)
@given(segments)
def test_jsonl_round_trip(tmp_path_factory, segs):
    t = build(segs)
    t.reward = 0.5
    path = tmp_path_factory.mktemp("j") / "t.jsonl"
    write_jsonl([t], path)
    (back,) = read_jsonl(path)
    assert back.tokens == t.tokens and back.sources == t.sources and back.tool_calls == t.tool_calls
    assert [math.isnan(x) for x in back.logprobs] == [math.isnan(x) for x in t.logprobs]
    assert back.reward == 0.5


def test_read_jsonl_names_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl([build([(Source.MODEL, 1)])], path)
    with open(path, "a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        read_jsonl(path)
