"""Fixtures for the RL tests: a tiny random Llama (the tiny-llama preset of ``tiny-cpu``) saved as a Hugging Face
directory with a word-level tokenizer over its whole vocabulary, and a prompt file of word prompts whose gold
answer is the word ``w7`` (the toy task of ``tests/rl/toy.py``); helpers that run ``octo rl`` as users do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TOY_OVERRIDES = ["rl.prompts.template=raw", "rl.rollout.stop=[]", "rl.reward=tests.rl.toy:target_share",
                 "logging.tensorboard=false"]


def make_toy_model(out: Path, seed: int = 0, vocab_size: int = 0) -> Path:
    """The toy model; ``vocab_size`` (0: the preset's 256) other than a multiple of 128 makes Megatron-Core pad
    the vocabulary, which the trainer's log-probs must ignore."""
    import transformers

    from megatron_octo.models import llama

    fields = dict(llama.PRESETS["tiny-llama"])
    fields["vocab_size"] = vocab_size = vocab_size or fields["vocab_size"]
    config = transformers.LlamaConfig(**{**fields, "bos_token_id": 1, "eos_token_id": 2})
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return make_toy_tokenizer(out, vocab_size)


def make_toy_tokenizer(out: Path, vocab_size: int) -> Path:
    """``out`` with the word-level tokenizer over ``vocab_size`` tokens (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, then
    ``w3`` ...) and ``prompts.jsonl``, the toy task's 64 prompts."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="<unk>").save_pretrained(out)
    with open(out / "prompts.jsonl", "w") as f:
        for i in range(64):
            f.write(json.dumps({"prompt": f"w{10 + i % 50} w{20 + i % 30} w{5 + i % 7}", "answer": "w7"}) + "\n")
    return out


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory) -> Path:
    return make_toy_model(tmp_path_factory.mktemp("toy-hf"))


@pytest.fixture(scope="session")
def toy_model_v250(tmp_path_factory) -> Path:
    """The toy model with 250 tokens: padded to 256 rows for TP=2 (6 padding rows on the second rank)."""
    return make_toy_model(tmp_path_factory.mktemp("toy-hf-v250"), vocab_size=250)


def toy_args(model: Path) -> list:
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    return [f"rl.init={model}", f"rl.prompts.path={model / 'prompts.jsonl'}", f"model.vocab_size={vocab}",
            *TOY_OVERRIDES]


def run_octo_rl(run_dir: Path, overrides, nproc: int = 1, recipe: str = "tiny-cpu-grpo", check: bool = True):
    """``octo rl`` in a child process (under torchrun for several); returns (process, metrics records)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = (launcher + ["-m", "megatron_octo"] if nproc > 1 else [sys.executable, "-m", "megatron_octo"])
    cmd += ["rl", "--recipe", recipe, "--run-dir", str(run_dir), *overrides]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=str(REPO))
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    metrics = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    return proc, records
