"""Fixtures for the converter tests: small random Hugging Face models built through the real transformers config
classes (Llama with GQA and llama3 RoPE scaling, tied and untied; Qwen2 with QKV biases and a vocabulary that needs
TP padding), each saved with ``save_pretrained`` beside a small tokenizer, and their TP=2 x PP=2 conversions.

No torch.distributed in this process: Megatron-Core models run in subprocesses (test_parallel.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest
import torch

from megatron_octo.models import llama, qwen2

# name -> (transformers config class name, config.json fields)
MODELS = {
    # The tiny-llama preset (4 layers, 4 heads, 2 KV groups, head_dim 16, llama3 scaling, tied): the model of the
    # tiny-cpu recipe, so `octo train --recipe tiny-cpu checkpoint.load=...` can load its conversion.
    "llama-tied": ("LlamaConfig", llama.PRESETS["tiny-llama"]),
    "llama-untied": ("LlamaConfig", llama.PRESETS["tiny-llama-untied"]),
    # Qwen2 with biases, untied, 300 tokens: padded to 512 rows for TP=2 and 384 for TP=1 (multiples of 128 * tp).
    "qwen2-untied-v300": ("Qwen2Config", {**qwen2.PRESETS["tiny-qwen2"], "vocab_size": 300,
                                          "tie_word_embeddings": False}),
}
TOKENIZER_WORDS = 200  # < every model's vocabulary


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values of unit-scale effect everywhere (HF initializes norms to one and biases to zero, which would
    hide a swapped norm or a dropped bias)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_((1.0 if "norm" in name else 0.0) + 0.2 * noise if p.ndim == 1 else noise / p.shape[1] ** 0.5)
    return model


def make_tokenizer(out: Path) -> None:
    """A word-level tokenizer over 200 words with <s> and </s>, saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(TOKENIZER_WORDS - 3)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(out))


def make_hf_model(name: str, out: Path, seed: int = 0) -> Path:
    import transformers

    cls_name, fields = MODELS[name]
    config = getattr(transformers, cls_name)(**fields)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    randomize_(model.float().eval(), seed)
    model.save_pretrained(str(out))
    make_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: make_hf_model(name, root / name, seed=i) for i, name in enumerate(MODELS)}


@pytest.fixture(scope="session")
def converted(hf_models, tmp_path_factory) -> Dict[str, Path]:
    """Each HF model converted to Megatron-Core for TP=2 x PP=2: the checkpoint directory inside each output (the
    output is a save folder: tracker file + ``release/``)."""
    from megatron_octo.convert import hf_to_mcore
    from megatron_octo.training.checkpoint import resolve

    root = tmp_path_factory.mktemp("mcore")
    return {name: resolve(str(hf_to_mcore(path, root / name, tp=2, pp=2, quiet=True).output))
            for name, path in hf_models.items()}


def load_safetensors_dir(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


@torch.no_grad()
def hf_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                              attn_implementation="eager")
    return model.eval()(ids).logits
