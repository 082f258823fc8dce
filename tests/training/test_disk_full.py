"""A disk that fills up during a checkpoint save, in process (`octo train` through ``cli.main``): the file write inside
Megatron-Core's checkpoint writer raises ENOSPC (tests/disk_full.py). One line naming the directory and the free
space, exit 2, no partial save left, and the previous checkpoint stays complete: the same command then resumes
from it."""

from __future__ import annotations

import json

import pytest

from megatron_octo.cli import main
from megatron_octo.training.checkpoint import complete_checkpoints
from megatron_octo.training.resume import checkpoint_problem
from tests.disk_full import filling_open

BASE = ["train.iters=2", "checkpoint.save_interval=1", "logging.tensorboard=false", "precision.dtype=fp32",
        "train.eval_interval=null"]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("octo: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("async_save", [False, True])
def test_disk_full_during_a_save_keeps_the_previous_checkpoint(async_save, tmp_path, capsys, monkeypatch):
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run = tmp_path / "run"
    argv = ["train", "--recipe", "tiny-cpu", "--run-dir", str(run), *BASE, f"checkpoint.async_save={async_save}"]
    # the second save (step 2) finds the disk full after 4 KiB of its first shard file
    monkeypatch.setattr(filesystem_async, "open", filling_open("iter_0000002.tmp", room=4096), raising=False)
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    root = run / "checkpoints"
    assert f"disk full (No space left on device) saving the checkpoint of step 2 into {root}, which has " in line
    assert " free: the partial save was removed and the newest complete checkpoint, iter_0000001, is intact" in line
    assert [p.name for p in complete_checkpoints(root)] == ["iter_0000001"]
    assert not list(root.glob("iter_0000002*")), "the partial save was left behind"
    assert checkpoint_problem(root / "iter_0000001") is None
    assert (root / "latest_checkpointed_iteration.txt").read_text() == "1\n"

    if async_save:
        return  # the resume below is the same for both
    monkeypatch.undo()  # space freed: the same command resumes from step 1
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(argv) == 0, capsys.readouterr().err
    assert [p.name for p in complete_checkpoints(root)] == ["iter_0000001", "iter_0000002"]
    steps = [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_the_writer_workers_log_line_about_a_full_disk_is_dropped():
    """Megatron-Core logs the worker's failure (printed to stderr by Python's last-resort handler when nothing is
    configured): the save reports it as the one line instead."""
    import logging

    from megatron_octo.training.checkpoint import _NoSpaceRecords

    def record(msg):
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, None, None)

    f = _NoSpaceRecords()
    assert not f.filter(record("Local process 0 encountered an error: [Errno 28] No space left on device: 'a'"))
    assert f.filter(record("Local process 0 encountered an error: [Errno 13] Permission denied: 'a'"))
