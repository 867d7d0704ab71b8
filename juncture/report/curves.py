"""Training curves from metrics.jsonl: which metrics go in which chart, drawn with matplotlib (Agg).

Each chart is saved as a PNG (for papers and READMEs) and rendered to an SVG string that the HTML
report inlines. A chart whose metrics never appear in the run (e.g. branch statistics of a GRPO run)
is left out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from juncture import jsonl


@dataclass(frozen=True)
class Curve:
    name: str  # file stem of the PNG
    title: str
    series: tuple[tuple[str, str], ...]  # (metrics key, legend label)
    ylabel: str = ""


CURVES = (
    Curve("reward", "Reward", (("rollout/reward", "initial rollouts"), ("branches/reward", "branches"))),
    Curve("accuracy", "Accuracy", (("rollout/accuracy", "initial rollouts"), ("branches/accuracy", "branches"))),
    Curve("length", "Length", (("rollout/model_tokens", "model tokens, initial"), ("rollout/response_tokens",
          "response tokens, initial"), ("branches/model_tokens", "model tokens, branches")), "tokens per rollout"),
    Curve("entropy", "Token entropy", (("rollout/entropy", "initial rollouts"), ("branches/entropy", "branches")), "nats"),
    Curve("tool_calls", "Tool calls", (("rollout/tool_calls", "calls per rollout"), ("rollout/tool_errors",
          "errors per rollout"), ("branches/new_tool_calls", "new calls per branch"))),
    Curve("branch_reward", "Branches: reward gain", (("fork/reward_minus_source", "branch − source reward"),)),
    Curve("fork_where", "Fork points: where", (("fork/where/after_result", "after a tool result"), ("fork/where/tool_call",
          "in a tool call"), ("fork/where/think", "in <think>"), ("fork/where/other", "elsewhere")), "fraction"),
    Curve("fork_origin", "Fork points: origin", (("fork/origin/strict", "strict candidate"), ("fork/origin/fill",
          "fallback fill"), ("fork/origin/duplicate", "duplicate")), "fraction"),
    Curve("fork_scores", "Branch-point scores", (("fork/entropy", "H at fork points"), ("fork/H_mean", "H, all tokens"),
          ("fork/omega_mean", "Ω^BS mean"), ("fork/omega_std", "Ω^BS std"))),
    Curve("update", "Update", (("train/loss", "loss"), ("train/grad_norm", "grad norm"))),
)


def read_metrics_tolerant(path: Path) -> tuple[list[dict], int]:
    """(records, lines skipped): a run still writing may leave a torn last line, which is skipped."""
    if not path.is_file():
        return [], 0
    torn: list[str] = []
    rows, bad = [], 0
    for _, rec in jsonl.read(path, on_bad=lambda where, _: torn.append(where)):
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            rows.append(rec)
        else:
            bad += 1
    return rows, bad + len(torn)


def series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), int | float)]
    if not pts:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*pts, strict=True)
    return np.asarray(x), np.asarray(y)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter windows at the start), so the line never looks ahead."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def draw(rows: list[dict], curve: Curve):
    """The matplotlib figure of one chart, or None when none of its metrics were logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = [(label, *series(rows, key)) for key, label in curve.series]
    data = [d for d in data if len(d[1])]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.0), dpi=110)
    for i, (label, x, y) in enumerate(data):
        colour = f"C{i}"
        window = max(len(y) // 10, 1)
        if window > 1:  # noisy long runs: the raw values faded, a trailing moving average on top
            ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(x, _smooth(y, window), color=colour, linewidth=1.6, label=f"{label} (avg {window})")
        else:
            ax.plot(x, y, color=colour, linewidth=1.4, marker="o" if len(y) < 30 else None, markersize=3, label=label)
    ax.set_title(curve.title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    if curve.ylabel:
        ax.set_ylabel(curve.ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def render_curves(rows: list[dict], png_dir: Path) -> list[tuple[Curve, Path, str]]:
    """Write one PNG per chart into `png_dir`; returns (curve, png path, inline SVG text) per drawn chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    png_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "juncture"}):
        for curve in CURVES:
            fig = draw(rows, curve)
            if fig is None:
                continue
            png = png_dir / f"{curve.name}.png"
            fig.savefig(png)
            buf = io.StringIO()
            fig.savefig(buf, format="svg")
            plt.close(fig)
            svg = buf.getvalue()
            out.append((curve, png, svg[svg.index("<svg") :]))
    return out
