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


def test_the_writer_workers_log_line_about_a_failed_write_is_dropped():
    """Megatron-Core logs a writer worker's failure (printed to stderr by Python's last-resort handler when nothing
    is configured) and the save raises it: only the save's report remains (one line for a full disk)."""
    import logging

    from megatron_octo.training.checkpoint import _WriterFailureRecords

    def record(msg):
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, None, None)

    f = _WriterFailureRecords()
    assert not f.filter(record("Local process 0 encountered an error: [Errno 28] No space left on device: 'a'"))
    assert f.filter(record("FileSystemWriterAsync: collecting worker results..."))


@pytest.mark.parametrize("free, translated", [(1024, True), (1 << 40, False)])
def test_a_write_failure_without_errno_is_a_full_disk_only_when_space_is_short(free, translated, tmp_path,
                                                                               monkeypatch):
    """torch.save's zip writer replaces a shard write's ENOSPC with its own error ("unexpected pos", seen with
    TP=2, where a rank's shard is written through torch.save): with less space left than the newest checkpoint
    took (10 KiB here), the save reports a full disk; with space enough, the error is not reworded."""
    import shutil
    from types import SimpleNamespace

    from torch.distributed.checkpoint.api import CheckpointException

    from megatron_octo.training.checkpoint import META_FILE, Saver
    from megatron_octo.utils.io import DiskFullError

    root = tmp_path / "checkpoints"
    (root / "iter_0000001").mkdir(parents=True)
    (root / "iter_0000001" / META_FILE).write_text("{}")
    (root / "iter_0000001" / "__0_0.distcp").write_bytes(b"\0" * (10 * 1024 - 2))
    tmp = root / "iter_0000002.tmp"
    tmp.mkdir()
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=free))
    saver = Saver(root, keep_last=2, ctx=SimpleNamespace(is_main=True), save=False)
    error = RuntimeError("Worker failure: [enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    with pytest.raises(DiskFullError if translated else CheckpointException) as info:
        with saver._disk_full_is_one_line(2, tmp):
            raise CheckpointException("write", {1: (error, None)})
    if translated:
        assert str(info.value).startswith(
            "disk full (probably: the write failed with 'Worker failure: [enforce fail at inline_container.cc:672] . "
            f"unexpected pos 704 vs 598' and iter_0000001 took 10.0 KiB) saving the checkpoint of step 2 into {root}, "
            "which has 1.0 KiB free: the partial save was removed and the newest complete checkpoint, "
            "iter_0000001, is intact")
    assert tmp.exists() is not translated
