"""Checkpoints through `octo train`: exact resume, resume on another layout, a save killed midway, branching,
and the schedule guard. Real processes, as users run them."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_octo.training.checkpoint import complete_checkpoints, read_meta
from megatron_octo.training.signals import REQUEUE_EXIT_CODE

BASE = ["train.iters=6", "logging.tensorboard=false", "precision.dtype=fp32"]


def octo_train(run_dir, *overrides, nproc=1, expect_ok=True, extra_args=()):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = (launcher if nproc > 1 else [sys.executable]) + ["-m", "megatron_octo", "train", "--recipe", "tiny-cpu",
                                                            "--run-dir", str(run_dir), *extra_args, *BASE, *overrides]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir):
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in metrics(run_dir)]


def tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("full")
    octo_train(run)
    return run


def test_resume_is_bit_exact(uninterrupted, tmp_path):
    run = tmp_path / "run"
    proc = octo_train(run, "train.exit_interval=3")
    assert "trained steps 1-3 of 6" in proc.stdout
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == ["iter_0000003"]
    proc = octo_train(run)
    assert "resumed from" in proc.stdout and "iter_0000003" in proc.stdout
    assert losses(run) == losses(uninterrupted)  # exact floats, not approximately
    meta = read_meta(run / "checkpoints" / "iter_0000006")
    assert (meta.step, meta.tokens, meta.kind) == (6, 6 * 8 * 64, "training")
    # Running again finds nothing left to do.
    assert "nothing to do" in octo_train(run).stdout


def test_resume_on_another_layout(uninterrupted, tmp_path):
    run = tmp_path / "run"
    octo_train(run, "train.exit_interval=3", "parallel.tp=2", "parallel.pp=2", nproc=4)
    assert read_meta(run / "checkpoints" / "iter_0000003").layout["tp"] == 2
    octo_train(run)  # TP=1, PP=1: the dist checkpoint reshards on load
    for (step, loss, grad, lr), (_, ref_loss, ref_grad, ref_lr) in zip(losses(run), losses(uninterrupted)):
        assert loss == pytest.approx(ref_loss, rel=1e-5), step
        assert grad == pytest.approx(ref_grad, rel=1e-5), step
        assert lr == ref_lr


def test_resume_distributed_optimizer_on_fewer_ranks(uninterrupted, tmp_path):
    run = tmp_path / "run"
    octo_train(run, "train.exit_interval=3", "parallel.distributed_optimizer=true", nproc=2)
    octo_train(run, "parallel.distributed_optimizer=true")
    for (step, loss, _, _), (_, ref, _, _) in zip(losses(run), losses(uninterrupted)):
        assert loss == pytest.approx(ref, rel=1e-5), step


def test_a_save_killed_midway_leaves_the_previous_checkpoint(uninterrupted, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "megatron_octo", "train", "--recipe", "tiny-cpu", "--run-dir", str(run), *BASE,
           "checkpoint.save_interval=1", "checkpoint.keep_last=10"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    in_progress = run / "checkpoints" / "iter_0000004.tmp"
    deadline = time.monotonic() + 300
    while not in_progress.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its checkpoint-writer children
    proc.wait()
    assert in_progress.exists(), "the save of step 4 was never caught in progress"
    complete = [p.name for p in complete_checkpoints(run / "checkpoints")]
    assert complete[-1] == "iter_0000003" and "iter_0000004" not in complete
    out = octo_train(run).stdout
    assert "iter_0000003" in out
    assert losses(run) == losses(uninterrupted)
    assert not list((run / "checkpoints").glob("*.tmp"))  # the stale save was cleaned up


def test_branch_records_lineage_and_leaves_the_source_untouched(uninterrupted, tmp_path):
    source = uninterrupted / "checkpoints" / "iter_0000006"
    before = tree_digest(source)
    branch = tmp_path / "branch"
    octo_train(branch, f"checkpoint.branch_from={uninterrupted}:6", "schedule.lr=1e-3", "schedule.warmup_iters=0",
               "train.iters=4")
    assert tree_digest(source) == before
    meta = read_meta(branch / "checkpoints" / "iter_0000004")
    assert meta.step == 4 and meta.tokens == 4 * 512  # its own accounting, from 0
    assert meta.lineage == [{"path": str(source.resolve()), "step": 6, "tokens": 6 * 512, "recipe": "tiny-cpu"}]
    records = metrics(branch)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[0]["lr"] == pytest.approx(1e-3)  # the branch's schedule, not the source's stored LR
    # Weights and optimizer state came along: the first loss is the trained model's, not a fresh one's (~5.55).
    assert records[0]["loss"] < metrics(uninterrupted)[0]["loss"] - 0.1


def test_schedule_change_on_resume_is_refused_unless_overridden(uninterrupted, tmp_path):
    run = tmp_path / "run"
    octo_train(run, "train.exit_interval=3")
    refused = octo_train(run, "schedule.lr=1e-3", expect_ok=False)
    assert refused.returncode == 2
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("octo: error: schedule differs") and "--override-schedule" in error and "lr" in error
    octo_train(run, "schedule.lr=1e-3", "schedule.min_lr=1e-4", extra_args=["--override-schedule"])
    records = metrics(run)
    # tiny-cpu: cosine from the peak after 3 warm-up steps over 6; step 4 is the first decay step at num_steps=3,
    # where the decay has not started: lr = peak = the new 1e-3 (the stored 3e-3 must not survive).
    assert records[3]["lr"] == pytest.approx(1e-3)
    assert records[2]["lr"] == pytest.approx(2e-3)  # before the resume: 3e-3 * 2/3 warm-up


def test_sigterm_saves_and_exits_cleanly_then_resumes(uninterrupted, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "megatron_octo", "train", "--recipe", "tiny-cpu", "--run-dir", str(run), *BASE]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics_file, deadline = run / "metrics.jsonl", time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics_file.exists() and metrics_file.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == REQUEUE_EXIT_CODE, err[-3000:]  # stopped early: the job script requeues on it
    assert "SIGTERM received: saved step" in out
    saved = read_meta(complete_checkpoints(run / "checkpoints")[-1]).step
    assert 1 <= saved < 6, "the run should stop early, at the step where the signal arrived"
    octo_train(run)
    assert losses(run) == losses(uninterrupted)


def test_non_finite_losses_skip_updates_then_stop_the_run(tmp_path):
    run = tmp_path / "run"
    # An absurd LR: step 1 is fine, its update blows the weights up, and every later loss is inf/nan.
    proc = octo_train(run, "schedule.warmup_iters=0", "schedule.lr=1e30", "schedule.min_lr=0",
                      "checkpoint.save_interval=1", "train.max_nonfinite_steps=2", expect_ok=False)
    assert proc.returncode == 2
    assert "not finite for 2 consecutive steps" in proc.stderr.strip().splitlines()[-1]
    records = metrics(run)
    skipped = [r["skipped_steps"] for r in records]
    good = skipped.count(0)  # the steps before the blow-up shows in the loss
    assert good >= 1 and skipped == [0] * good + [1, 2]
    assert all(r["loss"] != r["loss"] or r["loss"] in (float("inf"), float("-inf")) for r in records[good:])
    # Every good step saved (save_interval=1); the skipped steps saved nothing.
    assert complete_checkpoints(run / "checkpoints")[-1].name == f"iter_{good:07d}"


def test_async_save_publishes_complete_checkpoints_and_resumes_exactly(uninterrupted, tmp_path):
    run = tmp_path / "run"
    octo_train(run, "checkpoint.async_save=true", "checkpoint.save_interval=2", "checkpoint.keep_last=5",
               "train.exit_interval=4")
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == ["iter_0000002", "iter_0000004"]
    assert not list((run / "checkpoints").glob("*.tmp"))
    octo_train(run, "checkpoint.async_save=true")
    assert losses(run) == losses(uninterrupted)
