"""Weight sync from tensor- and pipeline-parallel trainers: under TP=2 on gloo, the full HF state gathered from the shards
equals the model the trainer started from tensor by tensor, and ``octo rl`` on TP=2 keeps the engine's and the
trainer's log-probs of the sampled tokens together (mismatch < 1.001) after every update."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.rl.conftest import REPO, run_octo_rl, toy_args

CHECK = Path(__file__).with_name("torchrun_sync.py")


def test_tp2_gathered_weights_equal_the_start(toy_model, tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(CHECK),
           str(toy_model), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "SYNC OK" in proc.stdout


def test_tp2_rl_steps_keep_engine_and_trainer_together(toy_model_v250, tmp_path):
    """With a vocabulary Megatron-Core pads (250 -> 256 rows under TP=2) the padding must not take probability."""
    _, records = run_octo_rl(tmp_path / "tp2", toy_args(toy_model_v250) + ["parallel.tp=2", "train.iters=2",
                                                                     "schedule.lr=3e-3", "checkpoint.save=false"],
                             nproc=2)
    assert len(records) == 2
    for r in records:
        assert 1.0 <= r["logprob_mismatch"] < 1.001, r


def test_pp2_rl_step_with_validation(toy_model, tmp_path):
    """Pipeline parallelism (PP=2): log-probs and updates through the pipeline schedule keep the mismatch at 1;
    greedy validation on local benchmark data runs on rank 0 and reaches every rank's metrics."""
    from tests.eval.helpers import shared_data_dir

    data = shared_data_dir() / "eval"  # skips with the reason where the shared data is absent
    overrides = toy_args(toy_model) + ["parallel.pp=2", "train.iters=1", "checkpoint.save=false",
                                       "rl.validation.interval=1", "rl.validation.benchmarks=[gsm8k,amc23]",
                                       "rl.validation.limit=2", "rl.validation.max_new_tokens=4",
                                       f"rl.validation.data_dir={data}"]
    _, records = run_octo_rl(tmp_path / "pp2", overrides, nproc=2)
    assert len(records) == 1 and 1.0 <= records[0]["logprob_mismatch"] < 1.001
    assert 0.0 <= records[0]["val_gsm8k"] <= 100.0 and 0.0 <= records[0]["val_amc23"] <= 100.0
    assert (tmp_path / "pp2" / "validation" / "step_0000001").is_dir()


def test_dp2_rollout_ranks_split_the_prompts(toy_model, tmp_path):
    """Data parallelism: each of the 2 replicas has its own engine and samples half of the step's prompts; the
    metrics cover all of them."""
    _, records = run_octo_rl(tmp_path / "dp2", toy_args(toy_model) + ["train.iters=2", "checkpoint.save=false"],
                             nproc=2)
    assert [r["responses"] for r in records] == [64.0, 64.0]  # 8 prompts x 8 rollouts, 4 prompts on each replica
    for r in records:
        assert 1.0 <= r["logprob_mismatch"] < 1.001 and r["skipped"] == 0.0
