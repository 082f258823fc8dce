"""``octo plot``: loss (training, and validation where logged) and learning rate against tokens for one or more
runs, as a PNG.

A branch (a run whose checkpoints record a lineage) is drawn from where its source left off: its tokens are offset
by the source checkpoint's tokens, so a stable run and its decay branches read as one Stable-then-Decay picture.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence

from megatron_octo.errors import OctoError
from megatron_octo.training.checkpoint import latest_checkpoint, read_meta
from megatron_octo.training.metrics import read_metrics
from megatron_octo.utils.io import OutputExistsError


class PlotError(OctoError, ValueError):
    """A run directory cannot be plotted; the message says why."""


def token_offset(run_dir: Path) -> int:
    """Tokens consumed before this run started: its lineage's sum (0 for a run from scratch)."""
    latest = latest_checkpoint(Path(run_dir) / "checkpoints")
    if latest is None:
        return 0
    return sum(entry["tokens"] for entry in read_meta(latest).lineage)


def _check_metrics(run: Path) -> None:
    """PlotError (one line, naming file:line) for a run without a readable metrics.jsonl."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise PlotError(f"{run} has no metrics.jsonl: pass run directories written by `octo train`")
    import json

    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not all(k in record for k in ("tokens", "loss", "lr")):
                raise PlotError(
                    f"{path}:{number} is not a metrics record (a run killed while writing it?): "
                    "delete that line, or resume the run"
                )


def _curves(run_dirs: Sequence[str]) -> List[tuple]:
    curves = []
    for run in run_dirs:
        path = Path(run) / "metrics.jsonl"
        if not path.is_file():
            raise PlotError(f"{run} has no metrics.jsonl: pass run directories written by `octo train`")
        offset = token_offset(Path(run))
        records = read_metrics(path)
        tokens = [(offset + r["tokens"]) / 1e6 for r in records]
        val = [((offset + r["tokens"]) / 1e6, r["val_loss"]) for r in records if "val_loss" in r]
        curves.append((Path(run).name, tokens, [r["loss"] for r in records], [r["lr"] for r in records], val))
    return curves


def plot_runs(run_dirs: Sequence[str], output: str, overwrite: bool = False) -> Path:
    """Draw every run's loss and LR against tokens (millions) into ``output`` (PNG); return its path."""
    out = Path(output)
    for run in run_dirs:  # a bad run directory is the first thing to hear about, before an existing output
        _check_metrics(Path(run))
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists: pass --overwrite or choose another --output")
    curves = _curves(run_dirs)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    for name, tokens, loss, lr, val in curves:
        (line,) = ax_loss.plot(tokens, loss, label=name)
        if val:  # held-out validation loss (train.eval_interval), in the run's colour
            ax_loss.plot(*zip(*val), "o--", color=line.get_color(), markersize=4, label=f"{name} (validation)")
        ax_lr.plot(tokens, lr, label=name)
    ax_loss.set(xlabel="tokens (millions)", ylabel="loss", title="training and validation loss")
    ax_lr.set(xlabel="tokens (millions)", ylabel="learning rate", title="learning rate")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out
