"""fp16 learns: Megatron-Core's loss scaler is wired as Megatron-LM wires it (the schedules multiply each
micro-batch's loss by ``optimizer.scale_loss`` before backward; the optimizer unscales, and skips steps whose
gradients overflow). CPU runs real fp16 parameters and matmuls (Float16Module) with fp32 main weights.

Expected numbers: the fp32 run of ``tiny-cpu`` (the reference here); fp16's range (largest finite value 65504, just
under 2**16); Megatron-LM's dynamic-scaler defaults (initial scale 2**32, hysteresis 2: the first overflow keeps
the scale, each later one halves it; 1000 clean steps before it grows).
"""

import json
import os
import subprocess
import sys
import math

import pytest

COMMON = ["logging.tensorboard=false", "checkpoint.save=false"]


def run_train(run_dir, overrides, nproc=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = (launcher + ["-m", "megatron_octo"] if nproc > 1 else [sys.executable, "-m", "megatron_octo"])
    cmd += ["train", "--recipe", "tiny-cpu", "--run-dir", str(run_dir), *COMMON, *overrides]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("layout", ["single", "dp2-distopt"])
def test_fp16_tracks_fp32(tmp_path, layout):
    """With a scale that does not overflow (256) fp16 follows the fp32 run step by step (issue 13: before the fix
    grad_norm was about 1e-10 and the loss flat); also with the distributed optimizer (its own fp16 path: the
    scaler's unscale and overflow check over each rank's shard) on 2 ranks."""
    nproc, extra = (1, []) if layout == "single" else (2, ["parallel.distributed_optimizer=true"])
    fp32 = run_train(tmp_path / "fp32", ["train.iters=10", "precision.dtype=fp32"])
    fp16 = run_train(tmp_path / "fp16", ["train.iters=10", "precision.dtype=fp16", "precision.initial_loss_scale=256",
                                         *extra], nproc)
    for a, b in zip(fp32, fp16):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-3), (a, b)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-2), (a, b)
        assert b["loss_scale"] == 256.0 and b["overflow_steps"] == 0
    assert any(a["loss"] != b["loss"] for a, b in zip(fp32, fp16)), "fp16 gave fp32's numbers: it did not run"
    assert fp16[-1]["loss"] < fp16[0]["loss"] - 0.4  # fp32 here: 5.56 -> 5.10 in 10 steps
    assert "loss_scale" not in fp32[0]


def test_dynamic_loss_scale_backs_off_from_megatrons_default_then_learns(tmp_path):
    records = run_train(tmp_path / "fp16", ["train.iters=30", "precision.dtype=fp16", "schedule.warmup_iters=0",
                                            "schedule.style=constant"])
    scales = [r["loss_scale"] for r in records]
    overflowed = [math.isnan(r["grad_norm"]) for r in records]
    first_update = overflowed.index(False)
    # hysteresis 2: steps 1 and 2 at 2**32, then halved after every overflow until a step fits
    assert scales[:first_update + 1] == [2.0**32] + [2.0**(33 - i) for i in range(1, first_update + 1)]
    assert 1.0 <= scales[first_update] <= 2.0**15  # gradients of order 1 times the scale must stay below 65504
    assert [r["overflow_steps"] for r in records] == [sum(overflowed[:i + 1]) for i in range(len(records))]
    for before, after in zip(records, records[1:]):  # an overflow halves the scale (after the first); none grows it
        assert after["loss_scale"] in (before["loss_scale"], before["loss_scale"] / 2)
    assert records[-1]["loss"] < records[first_update]["loss"] - 0.2
