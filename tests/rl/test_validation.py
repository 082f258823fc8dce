"""Validation sharded over the rollout engines (rl.validation): under torchrun with DP=2 (two engines) the
gathered completions, scores and prediction files equal a rank-0 validation of the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.rl.conftest import REPO

SCRIPT = Path(__file__).with_name("torchrun_validation.py")


def _data() -> Path:
    from tests.eval.helpers import shared_data_dir

    env = os.environ.get("OCTO_DATA")
    return Path(env) if env and (Path(env) / "eval").is_dir() else shared_data_dir()


def test_sharded_validation_equals_rank0_validation(toy_model, tmp_path):
    data = _data() / "eval"  # skips with the reason where the shared data is absent
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(SCRIPT),
           str(toy_model), str(tmp_path), str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "VALIDATION OK" in proc.stdout


def test_validation_on_a_held_out_file(tmp_path):
    """rl.validation.path: the file's problems, rendered with the RL template, replace the benchmarks."""
    import pytest

    from megatron_octo.config import load_recipe
    from megatron_octo.rl.prompts import PromptError
    from megatron_octo.rl.validation import validation_items, validation_requests

    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text('{"prompt": "What is 1 + 2?", "answer": "3"}\n{"prompt": "What is 4 - 1?", "answer": 3}\n')
    recipe = load_recipe("tiny-cpu-grpo", [f"rl.validation.path={held_out}", "rl.validation.at_start=true",
                                           "rl.prompts.template=user_assistant"])
    assert recipe.rl.validation.at_start
    items = validation_items(recipe)
    assert items == [{"question": "What is 1 + 2?", "answer": "3"}, {"question": "What is 4 - 1?", "answer": "3"}]
    requests = validation_requests(recipe, items)
    assert [p for p, _ in requests] == ["User: What is 1 + 2?\nAssistant:", "User: What is 4 - 1?\nAssistant:"]
    missing = load_recipe("tiny-cpu-grpo", [f"rl.validation.path={tmp_path / 'nope.jsonl'}"])
    with pytest.raises(PromptError, match="rl.validation.path .* does not exist"):
        validation_items(missing)
