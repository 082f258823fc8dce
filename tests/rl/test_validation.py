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
