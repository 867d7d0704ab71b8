"""Bad input gets one clear message naming what is wrong, and never destroys a run directory."""

from __future__ import annotations

from typer.testing import CliRunner

from juncture.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_help_lists_commands():
    code, out = invoke("--help")
    assert code == 0 and all(c in out for c in ("train", "eval", "sft"))


def test_nonexistent_model_path(tmp_path):
    code, out = invoke("train", f"run_dir={tmp_path / 'r'}", f"model.path={tmp_path / 'missing'}")
    assert code == 2 and "model.path" in out and "missing" in out and "Traceback" not in out


def test_malformed_config_value(tmp_path):
    code, out = invoke("train", f"run_dir={tmp_path / 'r'}", "train.steps=lots")
    assert code == 2 and "train.steps" in out and "lots" in out


def test_data_file_with_missing_field(tmp_path, tiny_model_dir):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    code, out = invoke("train", f"run_dir={tmp_path / 'r'}", f"model.path={tiny_model_dir}", "task.name=file",
                       f"task.path={data}")
    assert code == 2 and "data.jsonl" in out and ":2" in out and "answer" in out


def test_existing_run_directory_is_not_overwritten(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    code, out = invoke("train", f"run_dir={run}")
    assert code == 2 and "--resume" in out
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'
