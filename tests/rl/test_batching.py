"""Token-budget micro-batches (``rl.max_tokens_per_micro_batch``): the grouping rule by hand, and on long-tailed
rollouts the same per-token log-probs, loss (surrogate + KL) and gradients as the padded path to 1e-6, one process
and a two-stage pipeline (micro-batches of different shapes through Megatron-Core's P2P), with far fewer tokens;
the same for THD sequence packing (``rl.sequence_packing``), also under TP=2 x PP=2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.rl.conftest import REPO

SCRIPT = Path(__file__).with_name("torchrun_batching.py")


def test_groups_sorted_longest_first_within_the_budget():
    from megatron_octo.rl.rollouts import token_budget_groups

    lengths = [10, 30, 7, 100, 9, 30]
    # padded to multiples of 8: 16, 32, 8, 104, 16, 32. Budget 64: 100 alone (104 > 64), then 30, 30 (2 x 32 = 64),
    # then 10, 9 (2 x 16 = 32), 7 joins them (3 x 16 = 48 <= 64)
    assert token_budget_groups(lengths, range(6), 64) == [[3], [1, 5], [0, 4, 2]]
    assert token_budget_groups(lengths, [0, 2, 4], 16) == [[0], [4], [2]]  # 16 each; 2 x 16 > 16
    assert token_budget_groups(lengths, [0, 2, 4], 10 ** 6) == [[0, 4, 2]]


def _run(nproc: int, overrides):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc-per-node={nproc}"]
    proc = subprocess.run(launcher + [str(SCRIPT), *overrides], capture_output=True, text=True, timeout=600,
                          env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "BATCHING OK" in proc.stdout


def test_token_budget_equals_padded_one_process():
    _run(1, [])


def test_token_budget_equals_padded_through_a_pipeline():
    _run(2, ["parallel.pp=2"])


def test_packed_thd_rows_equal_padded_one_process():
    """Sequence packing: each token-budget group as one THD row (Megatron-Core's packed-sequence RoPE, one causal
    attention per sequence) gives the padded path's numbers."""
    _run(1, ["--packed"])


def test_packed_thd_rows_equal_padded_under_tp2_pp2():
    _run(4, ["--packed", "parallel.tp=2", "parallel.pp=2"])
