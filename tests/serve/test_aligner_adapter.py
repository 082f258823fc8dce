"""The NeMo-Aligner adapter's parts that need neither NeMo-Aligner nor vLLM: how it is swapped in for TensorRT-LLM,
the rollout layout NeMo-Aligner's actor reads, what it refuses, and its settings block."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from megatron_octo.rollout.vllm_engine import Sample
from megatron_octo.serve import aligner_adapter as aa

REPO = Path(__file__).resolve().parents[2]
MODEL_CFG = {"ppo": {"vllm": {"model_dir": "/models/llama", "gpu_memory_utilization": 0.3}}}


class _Tok:
    eos_id = 2


def _adapter(**kw):
    args = dict(model_cfg=MODEL_CFG, end_strings=["User:", "Assistant:"], tokenizer=_Tok(), seed=7,
                max_generation_length=16, max_input_len=8)
    args.update(kw)
    return aa.VLLMGenerate(**args)


def test_pack_responses_is_prompt_plus_response_padded():
    tokens, lengths = aa.pack_responses([[5, 6, 7], [8]], [[9, 2], [10, 2]], pad_id=2)
    assert tokens == [[5, 6, 7, 9, 2], [8, 10, 2, 2, 2]]
    assert lengths == [5, 3]


def test_engine_gets_this_ranks_physical_gpu():
    assert aa.physical_device(3, None) == "3"
    assert aa.physical_device(1, "4,5,6") == "5"
    assert aa.physical_device(0, "GPU-0b1c, GPU-9f") == "GPU-0b1c"
    from megatron_octo.rollout import RolloutError

    with pytest.raises(RolloutError, match="not among"):
        aa.physical_device(2, "4,5")


def test_install_replaces_trt_llm_for_the_actor(monkeypatch):
    monkeypatch.setitem(sys.modules, aa.TRT_MODULE, None)  # undone after the test, whatever install() puts there
    fake_actor = type(sys)("fake_actor")
    fake_actor.GPTGenerateTRTLLM = object
    monkeypatch.setitem(sys.modules, aa.ACTOR_MODULES[0], fake_actor)
    aa.install()
    assert sys.modules[aa.TRT_MODULE].GPTGenerateTRTLLM is aa.VLLMGenerate
    assert fake_actor.GPTGenerateTRTLLM is aa.VLLMGenerate  # an already imported actor module is rebound


def test_launcher_runs_the_script_with_vllm_in_place_of_trt_llm(tmp_path):
    """The actor module's own import line, as in NeMo-Aligner, resolves to VLLMGenerate under the launcher, even
    with no nemo_aligner package installed (the real module would import tensorrt_llm)."""
    script = tmp_path / "train_gpt_ppo_actor.py"
    script.write_text(textwrap.dedent("""
        import sys
        from nemo_aligner.utils.trt_llm import GPTGenerateTRTLLM
        print(GPTGenerateTRTLLM.__module__, GPTGenerateTRTLLM.__name__, sys.argv[1:], __name__)
    """))
    out = subprocess.run([sys.executable, "-m", "megatron_octo.serve.aligner_adapter", str(script), "a=1", "++b=2"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["megatron_octo.serve.aligner_adapter", "VLLMGenerate", "['a=1',", "'++b=2']",
                                  "__main__"]
    bad = subprocess.run([sys.executable, "-m", "megatron_octo.serve.aligner_adapter"], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "usage:" in bad.stderr


@pytest.mark.parametrize("kw, message", [
    ({"reshard_model": True}, "reshard"),
    ({"sample_top_k": 40}, "top_k"),
    ({"repetition_penalty": 1.1}, "repetition_penalty"),
    ({"model_cfg": {"ppo": {}}}, "model.ppo.vllm.model_dir"),
    ({"model_cfg": {"ppo": {"vllm": {"model_dir": "m", "gpu_mem": 0.3}}}}, "unknown keys"),
])
def test_unsupported_settings_are_refused(kw, message):
    with pytest.raises(aa.AdapterError, match=message):
        _adapter(**kw)


def test_settings_and_sampling_from_the_actor_config():
    a = _adapter(sample_temperature=1.0, sample_top_p=1.0)
    assert a.settings == aa.VLLMSettings(model_dir="/models/llama", gpu_memory_utilization=0.3)
    assert (a.temperature, a.top_p, a.max_tokens, a.stop, a.pad_id) == (1.0, 1.0, 16, ("User:", "Assistant:"), 2)
    greedy = _adapter(use_greedy=True, sample_top_k=1)  # NeMo-Aligner sets top_k=1 with use_greedy
    assert (greedy.temperature, greedy.top_p) == (0.0, 1.0)


class _FakeService:
    def __init__(self):
        self.calls, self.slept = [], 0

    def generate(self, prompts, **kw):
        self.calls.append((prompts, kw))
        return [[Sample(token_ids=[100 + i, 2], logprobs=[-0.1, -0.2], text="x", finish_reason="stop")]
                for i in range(len(prompts))]

    def sleep(self):
        self.slept += 1


def test_generate_returns_nemo_aligner_rollout_layout():
    torch = pytest.importorskip("torch")
    a = _adapter(unload_engine_train=True)
    a.service = _FakeService()
    prompts = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    out = a.generate((prompts, torch.tensor([3, 2])))
    assert out["response_tokens"].tolist() == [[5, 6, 7, 100, 2], [8, 9, 101, 2, 2]]
    assert out["response_lengths"].tolist() == [5, 4]
    assert out["response_tokens"].dtype == torch.long
    sent, kw = a.service.calls[0]
    assert sent == [[5, 6, 7], [8, 9]] and kw["n"] == 1 and kw["stop"] == ("User:", "Assistant:")
    a.generate((prompts, torch.tensor([3, 2])))
    assert a.service.calls[1][1]["seed"] != kw["seed"]  # a fresh seed per rollout micro-batch
    a.free()
    assert a.service.slept == 1
    with pytest.raises(aa.AdapterError, match="max_input_len"):
        a.generate((torch.zeros((1, 9), dtype=torch.long), torch.tensor([9])))


@pytest.mark.aligner
def test_real_nemo_aligner_actor_gets_vllm_and_its_constructor_call_fits(monkeypatch):
    """With NeMo-Aligner installed (make test-aligner's venv; no TensorRT-LLM there): after install() its PPO and
    REINFORCE actor modules import and bind VLLMGenerate, and every keyword the PPO actor passes to
    GPTGenerateTRTLLM(...) is a parameter of VLLMGenerate."""
    pytest.importorskip("nemo_aligner", reason="nemo_aligner is not installed here (run `make test-aligner`)")
    import ast
    import importlib
    import inspect

    # undone after the test: the registered stand-in leaves sys.modules (setitem of an absent key deletes it)
    monkeypatch.setitem(sys.modules, aa.TRT_MODULE, sys.modules.get(aa.TRT_MODULE))
    aa.install()
    for name in aa.ACTOR_MODULES:
        assert importlib.import_module(name).GPTGenerateTRTLLM is aa.VLLMGenerate
    source = inspect.getsource(sys.modules[aa.ACTOR_MODULES[0]])
    calls = [n for n in ast.walk(ast.parse(source))
             if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "GPTGenerateTRTLLM"]
    assert calls, "the PPO actor no longer builds GPTGenerateTRTLLM: the adapter's hook point moved"
    accepted = set(inspect.signature(aa.VLLMGenerate.__init__).parameters)
    for call in calls:
        assert not call.args and {k.arg for k in call.keywords} <= accepted


def test_unknown_backend_is_refused():
    cfg = {"ppo": {"vllm": {"model_dir": "/models/llama", "backend": "trtllm"}}}
    with pytest.raises(aa.AdapterError, match="backend='trtllm': choose vllm or transformers"):
        _adapter(model_cfg=cfg)


def test_transformers_backend_refits_from_the_actors_mcore_weights(tmp_path):
    """The CPU path: the adapter's engine is a transformers model whose weights come from the actor's Megatron-Core
    state dict (here the HF model's, mapped by the family's weight map, with the output layer scaled by 1.5); after
    the refit its lm_head is 1.5 x the HF one, and rows keep the end string as NeMo-Aligner counts them."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_octo.convert.sources import open_hf
    from megatron_octo.models import get_family
    from tests.convert.conftest import load_safetensors_dir
    from tests.rollout.conftest import tiny_llama

    path = tiny_llama(tmp_path / "model", seed=0)
    hf = AutoModelForCausalLM.from_pretrained(str(path)).float()  # no dtype keyword: transformers 4 and 5 differ
    _, cfg = open_hf(path, 128)
    state = get_family(cfg.family).state_dict_from_hf(load_safetensors_dir(path), cfg, use_te=False, tp=1)
    state["output_layer.weight"] = state["output_layer.weight"] * 1.5
    actor = torch.nn.Module()
    actor.state_dict = lambda: {"module." + k: v for k, v in state.items()}  # NeMo's Float16Module naming
    tok = AutoTokenizer.from_pretrained(str(path))
    model_cfg = {"ppo": {"vllm": {"model_dir": str(path), "backend": "transformers", "dtype": "float32"}}}
    adapter = aa.VLLMGenerate(model_cfg=model_cfg, end_strings=["\n"], tokenizer=type("T", (), {"eos_id": 2})(),
                              use_greedy=True, max_generation_length=12, max_input_len=32)
    adapter.refit(actor)
    engine = adapter.service.engine.model
    vocab = hf.config.vocab_size
    assert torch.equal(engine.lm_head.weight[:vocab], 1.5 * hf.lm_head.weight[:vocab])
    assert torch.equal(engine.model.embed_tokens.weight, hf.model.embed_tokens.weight)
    prompt = tok("User: What is 12 + 30?\nAssistant:")["input_ids"]
    rows = adapter.generate((torch.tensor([prompt]), torch.tensor([len(prompt)])))
    length = int(rows["response_lengths"][0])
    assert length > len(prompt) and rows["response_tokens"].shape == (1, length)
    text = tok.decode(rows["response_tokens"][0, len(prompt):length].tolist(), skip_special_tokens=True)
    assert text.endswith("\n") or length == len(prompt) + 12  # ended on the kept end string, or ran to the limit


def test_fix_critic_server_gives_values_alone_a_rewards_placeholder(monkeypatch):
    """NeMo-Aligner 0.7's CriticServerTrainer unpacks (rewards, values) from its inference function, which returns
    the values alone when rewards come from another server; after the fix it returns (zeros [batch, 1], values)."""
    torch = pytest.importorskip("torch")
    import types

    class CriticServerTrainer:  # what the fix relies on: the two attributes __init__ sets
        def __init__(self, combine):
            self.combine_rm_and_critic_server = combine
            self.infer_fn = lambda inputs: torch.ones(3, 5)

    module = types.ModuleType(aa.CRITIC_SERVER[0])
    module.CriticServerTrainer = CriticServerTrainer
    monkeypatch.setitem(sys.modules, aa.CRITIC_SERVER[0], module)
    assert aa.fix_critic_server() and aa.fix_critic_server()  # idempotent
    rewards, values = CriticServerTrainer(combine=False).infer_fn(inputs=None)
    assert rewards.shape == (3, 1) and torch.count_nonzero(rewards) == 0 and torch.equal(values, torch.ones(3, 5))
    assert torch.equal(CriticServerTrainer(combine=True).infer_fn(None), torch.ones(3, 5))  # combined mode untouched
