"""Atomic checkpoints: write into a temporary directory, then rename; `latest` is swapped atomically.

A crash at any moment leaves either the previous checkpoint or the new one, never half of one.
A failed write (disk full, read-only or unwritable directory) is a RunWriteError that names
what was being written, where, and why, and leaves the previous checkpoint in place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

CRASH_ENV = "JUNCTURE_TEST_CRASH_AT"

_HINTS = {
    errno.ENOSPC: "the disk is full; free space, then continue with `juncture train --resume`",
    errno.EDQUOT: "the disk quota is exhausted; free space, then continue with `juncture train --resume`",
    errno.EROFS: "the file system is read-only; choose a writable run_dir",
    errno.EACCES: "permission denied; make the directory writable or choose another run_dir",
    errno.EPERM: "operation not permitted; make the directory writable or choose another run_dir",
}


class RunWriteError(RuntimeError):
    """Writing part of a run failed; the message names the file, the OS error and what to do."""


@contextlib.contextmanager
def writing(what: str, path: Path) -> Iterator[None]:
    """Turn an OSError raised while writing `what` to `path` into a RunWriteError."""
    try:
        yield
    except OSError as e:
        code = errno.errorcode.get(e.errno, "?") if e.errno else "?"
        hint = _HINTS.get(e.errno, "")
        raise RunWriteError(
            f"cannot write {what} to {path}: {e.strerror or e} [{code}]" + (f"; {hint}" if hint else "")
        ) from e


def crash_point(name: str, step: int) -> None:
    """Test hook: with JUNCTURE_TEST_CRASH_AT=<name>:<step>, die here as `kill -9` would."""
    if os.environ.get(CRASH_ENV) == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_text(path: Path, text: str, what: str = "file") -> None:
    with writing(what, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _fsync_tree(root: Path) -> None:
    """Flush a finished checkpoint's files so the rename never publishes data still in the page cache."""
    for path in (*root.iterdir(), root):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(root: Path, step: int, model, tokenizer, optimizer, scheduler, extra: dict, keep: int) -> Path:
    final = root / f"step_{step:06d}"
    with writing(f"checkpoint step {step}", final):
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-step_{step:06d}-"))
        try:
            model.save_pretrained(tmp)
            crash_point("checkpoint.model", step)
            tokenizer.save_pretrained(tmp)
            with open(tmp / "trainer.pt", "wb") as f:
                torch.save(
                    {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}, f
                )
            crash_point("checkpoint.trainer", step)
            (tmp / "state.json").write_text(json.dumps({"step": step, **extra}, indent=1))
            _fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        crash_point("checkpoint.renamed", step)
        atomic_write_text(root / "latest", final.name, f"checkpoint pointer for step {step}")
        crash_point("checkpoint.latest", step)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step_*"):  # left by a crash inside an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load_trainer_state(ckpt: Path, optimizer, scheduler) -> dict:
    blob = torch.load(ckpt / "trainer.pt", weights_only=False, map_location="cpu")  # the optimizer moves its state
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    return json.loads((ckpt / "state.json").read_text())
