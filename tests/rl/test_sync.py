"""The streamed weight sync (rl.sync): the weight map one tensor at a time equals the whole-model map, buckets
follow their byte limit, and under torchrun (gloo) at TP=2 x PP=2 x DP=2 with the distributed optimizer and
overlapped parameter gathers every engine equals the trainer after each update, within the memory bound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.rl.conftest import REPO

SCRIPT = Path(__file__).with_name("torchrun_weight_sync.py")
LAYOUT = ["parallel.tp=2", "parallel.pp=2", "parallel.distributed_optimizer=true",
          "parallel.overlap_param_gather=true", "parallel.overlap_grad_reduce=true"]


def test_tensor_by_tensor_map_equals_the_whole_model_map():
    from megatron_octo.config.schema import ModelConfig
    from megatron_octo.models import get_family, preset
    from megatron_octo.models.weight_map import mcore_order, tensor_to_hf

    for family, name in (("llama", "tiny-llama"), ("qwen2", "tiny-qwen2")):
        fields = preset(name)
        cfg = ModelConfig(**{k: v for k, v in fields.items() if k in ModelConfig.__dataclass_fields__})
        module = get_family(family)
        hf = module.state_dict_to_hf  # the reference: whole-model conversion
        rules = module.layer_rules
        torch.manual_seed(0)
        padded = -(-cfg.vocab_size // 128) * 128 + 128  # a vocabulary padded beyond the real rows
        hf_sd = {k: torch.randn(v.shape) for k, v in _hf_like(module, cfg).items()}
        mcore = module.state_dict_from_hf(hf_sd, cfg, use_te=False, tp=1)
        mcore = {k: (torch.cat([v, torch.randn(padded - v.shape[0], v.shape[1])]) if "embedding" in k else v)
                 for k, v in mcore.items()}
        whole = hf(mcore, cfg)
        streamed = {}
        for key in mcore_order(cfg, rules, mcore.keys()):
            for hf_name, tensor in tensor_to_hf(key, mcore[key], cfg, rules):
                assert hf_name not in streamed
                streamed[hf_name] = tensor
        assert list(streamed) == list(whole)  # same names, same order
        for k in whole:
            assert torch.equal(streamed[k], whole[k]), k


def _hf_like(module, cfg):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**module.to_hf(cfg, dtype="float32"))
    return {k: v for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()
            if not (cfg.tie_word_embeddings and k == "lm_head.weight")}


def test_buckets_respect_the_byte_limit_and_keep_order():
    from megatron_octo.rl.sync import bucket_numel, plan_buckets

    layout = [[("a", (4, 4))], [("q", (2, 4)), ("k", (1, 4)), ("v", (1, 4))], [("big", (10, 10))], [("n", (4,))]]
    buckets = plan_buckets(layout, itemsize=4, max_bytes=100)  # 25 elements per bucket
    # a: 16 elements; qkv: 16 more would exceed 25 -> new bucket; big (100) alone; n (4) after it in a new one
    assert [[i for i, _ in b] for b in buckets] == [[0], [1], [2], [3]]
    assert buckets[1][0][1] == [("q", (2, 4), 0), ("k", (1, 4), 8), ("v", (1, 4), 12)]
    assert [bucket_numel(b) for b in buckets] == [16, 16, 100, 4]
    merged = plan_buckets(layout, itemsize=4, max_bytes=4 * 40)
    assert [[i for i, _ in b] for b in merged] == [[0, 1], [2], [3]]


def _run(model: Path, work: Path, mode: str, nproc: int, layout):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(SCRIPT),
           str(model), str(work), mode, *layout]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.fixture(scope="module")
def both_modes(toy_model, tmp_path_factory):
    """One 8-rank launch syncing in both modes, one after the other (two updates each)."""
    return _run(toy_model, tmp_path_factory.mktemp("sync"), "leader,group", 8, LAYOUT)


def test_sync_tp2_pp2_dp2_distopt_overlap_into_the_leaders_engine(both_modes):
    assert "WEIGHT SYNC OK leader" in both_modes
    lines = [line for line in both_modes.splitlines() if line.startswith("[leader] ")]
    assert sum("stale before sync: True" in line for line in lines) == 16  # 8 ranks x 2 updates: the gather was needed


def test_sync_broadcasts_buckets_to_every_engine_rank(both_modes):
    """Every rank of the model-parallel group hosts an engine (as vLLM's TP workers inside the trainer's TP group)
    and receives the leader's buckets over the group."""
    assert "WEIGHT SYNC OK group" in both_modes
    assert sum(line.startswith("[group] ") for line in both_modes.splitlines()) == 16
