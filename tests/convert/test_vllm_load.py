"""Issue 5: `octo convert --from mcore --to hf` output loads in vLLM with no log line about missing, unexpected or
uninitialized weights, and vLLM's greedy tokens equal transformers' on the same directory. Tiny Llamas (GQA, llama3
RoPE scaling, tied and untied, a vocabulary that Megatron-Core pads) go HF -> Megatron-Core (TP=2 x PP=2) -> HF, then
load in vLLM in a child process with vLLM's DEBUG logging. Skips where vLLM cannot be imported (`make test-vllm`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_octo.models import llama
from tests.convert.conftest import make_tokenizer, randomize_
from tests.rollout.conftest import need_vllm

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
MAX_TOKENS = 12
PROMPTS = [[1, 5, 17, 42, 99, 3], [1, 150, 7, 7, 81], [1, 2 + 100]]
# 4 heads of 32 (vLLM's CPU attention needs head_dim >= 32) over 2 KV groups; 300 tokens: padded to 512 rows at TP=2
FIELDS = {**llama.PRESETS["tiny-llama"], "head_dim": 32, "hidden_size": 128, "intermediate_size": 256,
          "num_hidden_layers": 2, "vocab_size": 300}
# What vLLM's loaders say when a checkpoint and the model disagree (vllm/model_executor/model_loader and models/utils)
WEIGHT_COMPLAINT = re.compile(r"missing|unexpected|not initiali[sz]ed|not loaded|failed to load|no module or "
                              r"parameter named|ignor\w* .*weight", re.I)


def _roundtrip(root: Path, tie: bool, seed: int) -> Path:
    """A random HF Llama -> Megatron-Core (TP=2, PP=2) -> HF; returns the exported directory."""
    import transformers

    from megatron_octo.convert import hf_to_mcore, mcore_to_hf

    src = root / f"hf-{tie}"
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**FIELDS, "tie_word_embeddings": tie}))
    randomize_(model.float().eval(), seed).save_pretrained(str(src))
    make_tokenizer(src)
    ckpt = hf_to_mcore(src, root / f"mcore-{tie}", tp=2, pp=2, quiet=True).output
    return mcore_to_hf(ckpt, root / f"export-{tie}", quiet=True).output


@torch.no_grad()
def _hf_greedy(model_dir: Path):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    for ids in PROMPTS:
        gen = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False, temperature=None,
                             top_p=None, top_k=None, pad_token_id=model.config.eos_token_id)
        out.append(gen[0, len(ids):].tolist())
    return out


def test_mcore_export_loads_in_vllm_cleanly_and_matches_transformers(tmp_path):
    need_vllm()
    exports = [_roundtrip(tmp_path, tie, seed) for seed, tie in enumerate((True, False))]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "DEBUG", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "tests.convert.vllm_load_child", json.dumps(PROMPTS),
                           str(MAX_TOKENS), *map(str, exports)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Loading safetensors checkpoint shards" in log  # the workers' log lines were captured
    complaints = [line for line in log.splitlines() if WEIGHT_COMPLAINT.search(line) and "weight" in line.lower()]
    assert not complaints, "\n".join(complaints)
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    for export in exports:
        expected = _hf_greedy(export)
        assert len({tuple(t) for t in expected}) > 1  # prompts lead to different continuations
        assert result[str(export)] == expected, export.name
