"""RL prompts: seeded per-epoch order that is a function of the step, one BOS, length filtering, clear errors."""

from __future__ import annotations

import json

import pytest

from megatron_octo.config.schema import PromptConfig
from megatron_octo.rl.prompts import PromptError, build_problems, encode, read_problems, shard, step_prompts


def test_step_prompts_cover_each_epoch_once_and_repeat_on_resume():
    # 10 problems, 4 a step: steps 0-1 and the first 2 of step 2 are epoch 0 (a permutation of all 10)
    epoch0 = step_prompts(10, 0, 4, seed=3) + step_prompts(10, 1, 4, seed=3) + step_prompts(10, 2, 4, seed=3)[:2]
    assert sorted(epoch0) == list(range(10))
    assert step_prompts(10, 1, 4, seed=3) == step_prompts(10, 1, 4, seed=3)
    assert step_prompts(10, 1, 4, seed=3) != step_prompts(10, 1, 4, seed=4)
    assert len(step_prompts(3, 5, 8, seed=0)) == 8  # more prompts a step than problems: several epochs


def test_shard_splits_contiguously():
    assert shard(list(range(8)), 1, 4) == [2, 3]
    with pytest.raises(AssertionError):
        shard(list(range(7)), 0, 2)


def test_encode_adds_exactly_one_bos(toy_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_model)
    assert encode(tok, "w10 w11") == [1, 10, 11]
    assert encode(tok, "<s> w10") == [1, 10]  # a template that carries BOS gets no second one


def test_build_problems_renders_and_drops_long_prompts(toy_model, tmp_path):
    from transformers import AutoTokenizer

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "w5", "answer": "w7"}) + "\n"
                    + json.dumps({"question": "w5 w6 w7 w8 w9", "answer": "w3"}) + "\n")
    tok = AutoTokenizer.from_pretrained(toy_model)
    problems = build_problems(PromptConfig(path=str(path), template="raw", max_prompt_tokens=3), tok, log=str)
    assert [(p.token_ids, p.answer) for p in problems] == [([1, 5], "w7")]  # BOS + w5; the 6-token one dropped
    simple = build_problems(PromptConfig(path=str(path), template="simple", max_prompt_tokens=400), tok, log=str)
    assert simple[0].text == "Question: w5\nAnswer: Let's think step by step."


def test_prompt_errors(tmp_path, toy_model):
    from transformers import AutoTokenizer

    with pytest.raises(PromptError, match="does not exist"):
        read_problems(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(PromptError, match="lacks a prompt/question and an answer"):
        read_problems(str(bad))
    bad.write_text('{"prompt": \n')
    with pytest.raises(PromptError, match="not valid JSON"):
        read_problems(str(bad))
    bad.write_text('{"prompt": "w5 w6", "answer": "1"}\n')
    tok = AutoTokenizer.from_pretrained(toy_model)
    with pytest.raises(PromptError, match="raise it"):
        build_problems(PromptConfig(path=str(bad), template="raw", max_prompt_tokens=1), tok, log=str)
    with pytest.raises(PromptError, match="rl.prompts.template"):
        build_problems(PromptConfig(path=str(bad), template="nonsense", max_prompt_tokens=9), tok, log=str)
