"""Weights & Biases as an optional logger (``logging.wandb_project``), run offline: every step's metrics reach the
W&B run under TensorBoard's names, and a resumed run continues the same W&B run."""

from __future__ import annotations

import json

import pytest

from megatron_octo.cli import main
from megatron_octo.config import ConfigError, load_recipe

wandb = pytest.importorskip("wandb", reason="wandb is not installed (the 'wandb' extra)")

FLAGS = ["logging.wandb_project=octo-test", "logging.wandb_mode=offline", "logging.tensorboard=false"]


def _logged(run_dir):
    """The bytes of each offline W&B run (protobuf records: logged keys and JSON values appear as written)."""
    return [p.read_bytes() for p in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]


def _has(data: bytes, key: str, value) -> bool:
    return key.encode() in data and json.dumps(value).encode() in data


def test_offline_run_logs_every_step_and_resume_continues_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    base = ["train", "--recipe", "tiny-cpu", "--run-dir", str(run), *FLAGS, "checkpoint.save_interval=2"]
    assert main(base + ["train.iters=2"]) == 0
    run_id = (run / "wandb_id").read_text().strip()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first = _logged(run)
    assert len(first) == 1
    for r in records:  # each step's loss and grad norm, under TensorBoard's names
        assert _has(first[0], "train/loss", r["loss"]) and _has(first[0], "train/grad_norm", r["grad_norm"])
    assert main(base + ["train.iters=4", "--override-schedule"]) == 0  # resumes from the step-2 checkpoint
    assert (run / "wandb_id").read_text().strip() == run_id
    runs = sorted(p.name for p in run.glob("wandb/offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(run_id) for name in runs)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert _has(_logged(run)[-1], "train/loss", records[-1]["loss"])


def test_bad_mode_is_refused_at_load():
    with pytest.raises(ConfigError, match="logging.wandb_mode='offlin'"):
        load_recipe("tiny-cpu", ["logging.wandb_project=p", "logging.wandb_mode=offlin"])
