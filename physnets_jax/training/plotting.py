"""Loss curves from run folders' metrics.jsonl, as PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence


def read_metrics(run_dir) -> list[dict]:
    """Records of <run_dir>/metrics.jsonl (or of that file itself), in order."""
    path = pathlib.Path(run_dir)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path} (is {run_dir} a run folder?)")
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {i} is not JSON ({err.msg})") from None
    return records


def plot_runs(run_dirs: Sequence, out_path, *, title: str | None = None) -> pathlib.Path:
    """One PNG with the train loss (line) and validation loss (markers) of each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ValueError("plot needs at least one run folder")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(run_dirs):
        records = read_metrics(run)
        name = pathlib.Path(run).name if pathlib.Path(run).is_dir() else pathlib.Path(run).parent.name
        color = colors[i % len(colors)]
        train = [(r["step"], r["loss"]) for r in records if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        if train:
            ax.plot(*zip(*train, strict=True), color=color, alpha=0.6, label=f"{name} train")
        if val:
            ax.plot(*zip(*val, strict=True), color=color, marker="o", linestyle="--", label=f"{name} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or "training curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
