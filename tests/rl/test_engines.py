"""The transformers rollout engine: weights only through ``load_weights``, greedy text equal to transformers'
own, log-probs equal to a forward pass of the same tokens, stop strings cut, seeded sampling reproducible."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from megatron_octo.rl.engines import TransformersEngine
from megatron_octo.rl.setup import _hf_config


@pytest.fixture(scope="module")
def setup(toy_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_octo.config.loader import load_recipe

    tok = AutoTokenizer.from_pretrained(toy_model)
    recipe = load_recipe("tiny-cpu-grpo")
    engine = TransformersEngine(_hf_config(recipe, tok), tok)
    engine.load_weights(load_file(str(toy_model / "model.safetensors")).items())
    reference = AutoModelForCausalLM.from_pretrained(toy_model, dtype=torch.float32).eval()
    return engine, reference, tok


PROMPTS = [[1, 10, 20, 5], [1, 33]]


def test_greedy_equals_transformers(setup):
    engine, reference, _ = setup
    out = engine.generate(PROMPTS, n=1, temperature=0.0, top_p=1.0, max_tokens=6)
    for prompt, group in zip(PROMPTS, out):
        ids = torch.tensor([prompt])
        want = reference.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
        assert group[0].token_ids == want[:len(group[0].token_ids)] and len(group[0].token_ids) >= 1


def test_logprobs_match_a_forward_pass(setup):
    engine, reference, _ = setup
    groups = engine.generate(PROMPTS, n=3, temperature=0.7, top_p=1.0, max_tokens=8, seed=5)
    for prompt, group in zip(PROMPTS, groups):
        assert len(group) == 3
        for s in group:
            assert len(s.logprobs) == len(s.token_ids) <= 8
            ids = torch.tensor([prompt + s.token_ids])
            with torch.no_grad():
                logits = reference(ids).logits[0, len(prompt) - 1:-1] / 0.7  # [t, vocab]
            want = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.token_ids)[:, None])[:, 0]
            assert torch.allclose(torch.tensor(s.logprobs), want, atol=1e-4)
            assert s.finish_reason in ("stop", "length")


def test_seeded_sampling_repeats(setup):
    engine, _, _ = setup
    a = engine.generate(PROMPTS, n=2, temperature=1.0, top_p=1.0, max_tokens=5, seed=11)
    b = engine.generate(PROMPTS, n=2, temperature=1.0, top_p=1.0, max_tokens=5, seed=11)
    assert [[s.token_ids for s in g] for g in a] == [[s.token_ids for s in g] for g in b]


def test_stop_strings_are_cut(setup):
    """Text before the stop string; tokens covering it (a token holding the text's end and the stop string's start
    stays), as rollout.sampling says (tests/rollout/test_sampling.py holds both engines to the BPE cases)."""
    engine, _, tok = setup

    def greedy(stop=()):
        return engine.generate(PROMPTS[:1], n=1, temperature=0.0, top_p=1.0, max_tokens=6, stop=stop)[0][0]

    full = greedy()
    first, second = full.text.split()[:2]  # word-level tokens, decoded with a space between them
    whole = greedy([f" {second}"])  # begins at a token boundary: the first token alone
    assert (whole.text, whole.finish_reason) == (first, "stop")
    assert whole.token_ids == full.token_ids[:1] and whole.logprobs == full.logprobs[:1]
    inside = greedy([f"{first[1:]} "])  # begins inside the first token, which stays
    assert (inside.text, inside.token_ids, inside.logprobs) == (first[0], full.token_ids[:1], full.logprobs[:1])
    assert greedy(["w999"]) == full


def test_load_weights_refuses_a_partial_state(setup):
    engine, _, _ = setup
    with pytest.raises(RuntimeError, match="missing"):
        engine.load_weights([("model.embed_tokens.weight", engine.model.model.embed_tokens.weight.detach())])
