"""Per-step metrics: one JSON line per step in ``metrics.jsonl``, TensorBoard scalars, a progress line.

The progress line is a log line every ``logging.log_interval`` steps, on a terminal too (as Megatron-LM logs), with
the elapsed time and ETA spelled by ``utils.progress``, the one progress implementation."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional

from megatron_octo.errors import OctoError
from megatron_octo.utils.progress import format_duration


class MetricsWriter:
    """Writes what the main rank measures. Only the main rank constructs one."""

    def __init__(self, run_dir: Path, total_steps: int, tensorboard: bool, log_interval: int = 1, stream=None):
        self.path = run_dir / "metrics.jsonl"
        self.total_steps = total_steps
        self.log_interval = log_interval
        self.stream = stream if stream is not None else sys.stdout  # the current stdout, not the one at import
        self._file = open(self.path, "a", buffering=1)
        self._tb = None
        self._start = time.monotonic()
        self._first_step: Optional[int] = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        from megatron_octo.training.wandb_log import open_wandb

        self._wandb = open_wandb(run_dir)  # logging.wandb_project of the run's recipe.yaml, else None

    def write(self, record: Dict[str, float]) -> None:
        """Append one step's record (must hold ``step``) and report progress."""
        self._file.write(json.dumps(record) + "\n")
        step = int(record["step"])
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    tag = f"validation/{key[4:]}" if key.startswith("val_") else f"train/{key}"
                    self._tb.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log(record, step)
        if step % self.log_interval == 0 or step == self.total_steps:
            self.stream.write(self._progress_line(record) + "\n")
            self.stream.flush()

    def _progress_line(self, record: Dict[str, float]) -> str:
        step = int(record["step"])
        if self._first_step is None:  # a resumed run starts past 0; its rate counts this invocation's steps
            self._first_step = step - 1
        elapsed = time.monotonic() - self._start
        eta = elapsed / (step - self._first_step) * (self.total_steps - step)
        return (
            f"step {step}/{self.total_steps} | {self._fields(record)} | elapsed {format_duration(elapsed)} | "
            f"ETA {format_duration(eta)}"
        )

    def _fields(self, record: Dict[str, float]) -> str:
        """The stage's own part of the progress line."""
        return (
            f"loss {record['loss']:.4f} | lr {record['lr']:.3e} | grad_norm {record['grad_norm']:.3f} | "
            f"{record['tokens_per_s']:.0f} tokens/s"
            + (f" | MFU {100 * record['mfu']:.1f}%" if "mfu" in record else "")
            + (f" | val loss {record['val_loss']:.4f}" if "val_loss" in record else "")
        )

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.close()
        if self._tb is not None:
            self._tb.close()


class MetricsFileError(OctoError, ValueError):
    """A metrics file has an unreadable line other than a torn last one; the message names file:line."""


def _parse(path: Path, drop_torn_tail: bool) -> list:
    lines = Path(path).read_text(errors="replace").splitlines(keepends=True)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if drop_torn_tail and number == len(lines):
                break  # a write cut short by a kill: the step it records was never checkpointed
            raise MetricsFileError(
                f"{path}:{number}: not a JSON record ({line.strip()[:60]!r}): fix or delete the line"
            ) from None
    return records


def read_metrics(path: Path) -> list:
    """All records of a ``metrics.jsonl`` (a torn last line, left by a kill during a write, is left out)."""
    return _parse(path, drop_torn_tail=True)


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (steps run after the checkpoint a resume starts from) and a torn last
    line; atomic."""
    if not path.exists():
        return
    from megatron_octo.utils.io import atomic_write_text

    kept = [r for r in read_metrics(path) if r["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def maybe_writer(
    is_main: bool, run_dir: Path, total_steps: int, tensorboard: bool, log_interval: int
) -> Optional[MetricsWriter]:
    """A writer on the main rank, None elsewhere."""
    return MetricsWriter(run_dir, total_steps, tensorboard, log_interval) if is_main else None
