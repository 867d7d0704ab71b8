"""Metrics: one JSON line per step (the format every plot reads), optionally TensorBoard / W&B."""

from __future__ import annotations

import json
import os
from pathlib import Path

from juncture import jsonl
from juncture.config import LoggingConfig
from juncture.train.checkpoint import CRASH_ENV, crash_point, writing


class MetricsLogger:
    def __init__(self, run_dir: Path, cfg: LoggingConfig, config_dict: dict):
        self.path = run_dir / "metrics.jsonl"
        self._tb = self._wandb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError("logging.tensorboard=true needs: pip install tensorboard") from e
            self._tb = SummaryWriter(str(run_dir / "tb"))
        if cfg.wandb:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError("logging.wandb=true needs: pip install wandb") from e
            self._wandb = wandb.init(project=cfg.wandb_project, config=config_dict, dir=str(run_dir))

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines of steps after the checkpoint (they will be recomputed) and any
        line a crash tore in half."""
        if not self.path.is_file():
            return
        keep = [line for line in self.path.read_text().splitlines() if line.strip() and _step(line) <= step]
        tmp = self.path.with_suffix(".tmp")
        with writing("metrics", self.path):
            tmp.write_text("".join(line + "\n" for line in keep))
            os.replace(tmp, self.path)

    def log(self, step: int, metrics: dict) -> None:
        line = json.dumps({"step": step, **metrics}) + "\n"
        with writing(f"metrics of step {step}", self.path), open(self.path, "a") as f:
            if os.environ.get(CRASH_ENV) == f"metrics.torn:{step}":  # test hook: die mid-line
                f.write(line[: len(line) // 2])
                f.flush()
                crash_point("metrics.torn", step)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if self._tb:
            for k, v in metrics.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(k, v, step)
        if self._wandb:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", -1))
    except (json.JSONDecodeError, AttributeError):
        return 10**12  # a torn last line from a crash: drop it


def read_metrics(path: Path) -> list[dict]:
    return [record for _, record in jsonl.read(path)]
