"""The sampling contract every rollout engine shares (``rollout.sampling``): request checks, text cut before the
earliest stop string, tokens cut to the ones covering that text. The transformers engine is held to the same
stop-string cases as the vLLM engine (tests/rollout/test_vllm_engine.py), on the same tiny Llama; no vLLM needed."""

from __future__ import annotations

import pytest
import torch

from megatron_octo.rollout.sampling import (
    RolloutError, Sample, check_request, stopped_sample, text_before_stop, text_through_stop, tokens_covering,
)
from tests.rollout.conftest import stop_cases, tiny_llama

PIECES = {1: "The", 2: " answer", 3: " is", 4: " 6.\n", 5: "\n", 6: "Q"}


def decode(ids):
    return "".join(PIECES[i] for i in ids)


def test_tokens_covering_drops_only_tokens_inside_the_stop_string():
    # stop "\n\nQ" begins inside token 4: token 4 stays (it holds " 6."), 5 and 6 lie inside the stop string
    assert tokens_covering([1, 2, 3, 4, 5, 6], "The answer is 6.", decode) == 4
    assert tokens_covering([1, 2, 3, 4, 5], "The answer is 6.\n\n", decode) == 5  # nothing to cut
    assert tokens_covering([5, 6], "", decode) == 0  # the stop string opened the response
    assert tokens_covering([1, 2], "Other", decode) == 2  # disagreeing detokenizers: keep everything


def test_text_is_cut_before_the_earliest_stop_string():
    assert text_before_stop("The answer is 6.\n\nQ: next", ["Q:", "\n\n"]) == ("The answer is 6.", True)
    assert text_before_stop("The answer is 6.", ["Q:", ""]) == ("The answer is 6.", False)  # "" never stops
    assert text_before_stop("Q: first", ["Q:"]) == ("", True)


def test_a_stopped_sample_keeps_logprobs_one_per_token():
    s = stopped_sample([1, 2, 3, 4, 5, 6], [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6], "The answer is 6.", decode)
    assert s == Sample(token_ids=[1, 2, 3, 4], logprobs=[-0.1, -0.2, -0.3, -0.4], text="The answer is 6.",
                       finish_reason="stop")


@pytest.mark.parametrize("prompts, kwargs, says", [
    ([], {}, "no prompts"),
    ([[1], []], {}, "prompt 1 has no tokens"),
    ([[1]], {"n": 0}, "n must be >= 1"),
    ([[1]], {"temperature": -0.5}, "temperature must be >= 0"),
    ([[1]], {"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ([[1]], {"max_tokens": 0}, "max_tokens must be >= 1"),
])
def test_bad_requests_are_one_line(prompts, kwargs, says):
    args = {"n": 1, "temperature": 1.0, "top_p": 1.0, "max_tokens": 4, **kwargs}
    with pytest.raises(RolloutError, match=says):
        check_request(prompts, **args)


def test_good_requests_come_back_as_int_lists():
    assert check_request([(1, 2), [3]], n=2, temperature=0.0, top_p=1.0, max_tokens=1) == [[1, 2], [3]]


@pytest.fixture(scope="module")
def transformers_engine(tmp_path_factory):
    """The transformers engine holding model A of the vLLM engine's tests (tiny_llama, seed 0)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_octo.rl.engines import TransformersEngine

    path = tiny_llama(tmp_path_factory.mktemp("rollout-model") / "a", seed=0)
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    engine = TransformersEngine(model.config.to_dict(), tok)
    engine.load_weights(model.named_parameters())
    return engine, tok


def test_the_transformers_engine_cuts_stop_strings_as_vllm_does(transformers_engine):
    engine, tok = transformers_engine
    prompt = tok("User: What is 12 + 30?\nAssistant:")["input_ids"]

    def greedy(**kw):
        return engine.generate([prompt], n=1, temperature=0.0, top_p=1.0, max_tokens=16, **kw)[0][0]

    full = greedy()
    cases = stop_cases(tok, full.token_ids)
    assert set(cases) == {"whole", "inside"}, f"greedy output {full.text!r} offers no stop-string case"
    for kind, (stop, count, text) in cases.items():
        s = greedy(stop=[stop])
        assert (s.text, s.finish_reason) == (text, "stop"), kind
        assert s.token_ids == full.token_ids[:count] and s.logprobs == full.logprobs[:count], kind
        if kind == "inside":  # the kept token holds text and the stop string's first character
            assert tok.decode(s.token_ids[:-1]) != s.text
    with pytest.raises(RolloutError, match="prompt 0 has no tokens"):
        engine.generate([[]], n=1, temperature=0.0, top_p=1.0, max_tokens=4)


def test_text_through_stop_keeps_the_earliest_ending_stop_string():
    assert text_through_stop("a \\boxed{2} b}", ["}"]) == ("a \\boxed{2}", True)
    assert text_through_stop("x User: y Assistant:", ["Assistant:", "User:"]) == ("x User:", True)
    assert text_through_stop("no stop here", ["}"]) == ("no stop here", False)


def test_the_transformers_engine_keeps_stop_strings_when_asked(transformers_engine):
    """keep_stop (NeMo-Aligner's actor): the response runs through the stop string, tokens to the one completing
    it, as VLLMEngine's include_stop_str_in_output."""
    engine, tok = transformers_engine
    prompt = tok("User: What is 12 + 30?\nAssistant:")["input_ids"]

    def greedy(**kw):
        return engine.generate([prompt], n=1, temperature=0.0, top_p=1.0, max_tokens=16, **kw)[0][0]

    full = greedy()
    stop, count, text = stop_cases(tok, full.token_ids)["whole"]  # stop = tokens count..count+1 of the response
    s = greedy(stop=[stop], keep_stop=True)
    assert (s.text, s.finish_reason) == (text + stop, "stop")
    assert s.token_ids == full.token_ids[: count + 2] and s.logprobs == full.logprobs[: count + 2]
    assert engine.is_sleeping is False
    engine.sleep(level=2)  # nothing to free: the call is accepted as VLLMEngine's
    engine.wake_up(tags=["weights"])
