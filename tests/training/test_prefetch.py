"""Training with the data prefetcher (worker processes reading ahead) gives the losses of training without it, bit
for bit, also across an interruption and resume; the prefetcher never adds a step. Manual garbage collection does
not change the numbers either."""

import json
import os
import subprocess
import sys

COMMON = ["train.iters=6", "schedule.warmup_iters=0", "logging.tensorboard=false"]


def octo_train(run_dir, overrides):
    cmd = [sys.executable, "-m", "megatron_octo", "train", "--recipe", "tiny-cpu", "--run-dir", str(run_dir),
           *COMMON, *overrides]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_prefetcher_and_manual_gc_keep_the_losses_across_a_resume(tmp_path):
    plain = octo_train(tmp_path / "plain", ["data.num_workers=0", "checkpoint.save=false"])
    ahead = ["data.num_workers=2", "data.prefetch_factor=4", "train.manual_gc=true", "train.manual_gc_interval=2"]
    first = octo_train(tmp_path / "ahead", ahead + ["train.exit_interval=3"])
    assert [r["step"] for r in first] == [1, 2, 3]
    records = octo_train(tmp_path / "ahead", ahead)  # resumes at step 3
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [(r["loss"], r["grad_norm"]) for r in records] == [(r["loss"], r["grad_norm"]) for r in plain]
    summary = json.loads((tmp_path / "ahead" / "train_summary.json").read_text())
    assert (summary["start_step"], summary["steps_run"]) == (3, 3)
