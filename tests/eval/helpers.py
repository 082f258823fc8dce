"""Helpers shared by the evaluation and reward tests: the real benchmark data beside the checkout (read in place,
never copied into the repository), derangements for wrong pairings, and a tiny random Llama with a local tokenizer."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("OCTO_SHARED_DATA") or REPO.parent / "shared" / "data")


def shared_data_dir() -> Path:
    """<repo>/../shared/data (or $OCTO_SHARED_DATA, for a checkout elsewhere), or skip the test with the reason."""
    if not (SHARED_DATA / "eval").is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (expected beside the repository checkout)")
    return SHARED_DATA


def read_rows(name: str):
    """Raw rows of shared/data/eval/<name>."""
    path = shared_data_dir() / "eval" / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def derangement(n: int, seed: int = 0):
    """A permutation of range(n) with no fixed point: pairs each problem with another problem's answer."""
    rng = random.Random(seed)
    while True:
        perm = list(range(n))
        rng.shuffle(perm)
        if all(i != p for i, p in enumerate(perm)):
            return perm


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """A random 2-layer Llama (hidden 128, 2 heads of 64 - vLLM's CPU attention needs head_dim >= 32) and a BPE
    tokenizer trained here on ASCII math text, saved as a Hugging Face model directory. Weights drawn with
    initializer_range 0.2 so that greedy choices are clear (no near-ties that float noise could flip)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [
        "Q: There are 15 trees in the grove. How many trees did the grove workers plant today?\nA: 21 - 15 = 6. "
        "The answer is 6.",
        "Problem:\nFind the domain of $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.\n\nSolution:\nThe domain is "
        "$\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. I hope it is correct.",
        "User: What is 12 + 30?\nAssistant: 12 + 30 = 42. The answer is \\boxed{42}.",
    ] * 4 + ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?()[]{}+-*/=<>$\\^_'\"%&|#@~"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # No byte alphabet beyond the corpus's ASCII: every token decodes to valid text, on both backends alike.
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, initializer_range=0.2,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out
