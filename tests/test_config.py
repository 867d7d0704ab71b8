from __future__ import annotations

import pytest

from juncture.config import ConfigError, RunConfig, apply_overrides, builtin_config, dump_config, load_config


def test_quickstart_config_loads():
    cfg = load_config()
    assert cfg.model.path == "default" and cfg.algorithm.branching == "appo" and cfg.task.name.startswith("reasoning_gym:")


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.steps=3", "optim.lr=1e-4", "agent.tools=[python, search]", "task.params.max_terms=5"])
    assert cfg.train.steps == 3 and cfg.optim.lr == 1e-4 and cfg.agent.tools == ["python", "search"]
    assert cfg.task.params["max_terms"] == 5


def test_a_mapping_override_replaces_the_mapping():
    assert load_config(None, ["task.params={}"]).task.params == {}
    assert load_config(None, ["task.params={max_terms: 3}"]).task.params == {"max_terms": 3}


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.steps.*got 'many'"):
        load_config(None, ["train.steps=many"])


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match=r"train\.stepz: unknown key"):
        load_config(None, ["train.stepz=3"])


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="max_turn_tokens"):
        load_config(None, ["agent.max_turn_tokens=500", "agent.max_new_tokens=100"])


def test_malformed_override_and_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_dump_round_trips(tmp_path):
    cfg = load_config(builtin_config("quickstart"), ["train.steps=2"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert RunConfig() != cfg  # the quickstart differs from bare defaults
