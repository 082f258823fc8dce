"""``octo rl`` on the shared stage runner: a stop signal on the exit_interval step exits 75 (the job is requeued),
background saves are published while the loop runs, checkpoints record the tokens trained on, and a setup mistake
writes neither ``recipe.yaml`` nor ``RUN_DIR/init``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from megatron_octo.training.checkpoint import complete_checkpoints, read_meta
from megatron_octo.training.signals import REQUEUE_EXIT_CODE
from tests.rl.conftest import REPO, run_octo_rl, toy_args

HOOK = REPO / "tests" / "training" / "step_hook.py"
PROMPT_TOKENS = 4
"""Each toy prompt is three words after one BOS token (conftest.make_toy_model, template raw)."""


def test_stop_signal_on_the_exit_interval_step_exits_75_with_real_token_counts(toy_model, tmp_path):
    run = tmp_path / "run"
    args = ["rl", "--recipe", "tiny-cpu-grpo", "--run-dir", str(run), *toy_args(toy_model), "train.iters=4",
            "train.exit_interval=2", "checkpoint.async_save=true", "checkpoint.save_interval=1",
            "checkpoint.keep_last=5"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(HOOK), "megatron_octo.rl.loop:rl_step", "1", "SIGUSR1", "--", *args],
                          capture_output=True, text=True, timeout=900, env=env, cwd=str(REPO))
    assert proc.returncode == REQUEUE_EXIT_CODE, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[octo rl] SIGUSR1 received: saved step 2, exiting" in proc.stdout
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == ["iter_0000001", "iter_0000002"]
    assert not list((run / "checkpoints").glob("*.tmp"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # prompt + response tokens of every response of the step, counted from the logged lengths
    per_step = [round(r["responses"] * (PROMPT_TOKENS + r["response_length_mean"])) for r in records]
    assert read_meta(run / "checkpoints" / "iter_0000001").tokens == per_step[0] > 0
    assert read_meta(run / "checkpoints" / "iter_0000002").tokens == per_step[0] + per_step[1]
    summary = json.loads((run / "rl_summary.json").read_text())
    assert summary["preempted"] and summary["exit_code"] == REQUEUE_EXIT_CODE
    assert not (run / "hf").exists()  # exported only once every step is done


def test_a_setup_mistake_writes_neither_recipe_nor_init(toy_model, tmp_path):
    run = tmp_path / "run"
    args = toy_args(toy_model) + [f"rl.prompts.path={tmp_path / 'missing.jsonl'}", "train.iters=2"]
    proc, _ = run_octo_rl(run, args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("octo: error: rl.prompts.path")
    assert not (run / "init").exists() and not (run / "recipe.yaml").exists()
