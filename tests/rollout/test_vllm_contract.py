"""One vLLM contract across our environments: the engine runs on the vLLM each one ships.

- main container (``VLLM_CONTAINER``) and CPU tests (``VLLM_CPU``): ``octo rl`` needs processed log-probs
  (``logprobs_mode``) and, on the CPU build, vLLM's layerwise reload for refits;
- NeMo-Aligner image (``VLLM_ALIGNER`` = 0.8.5, the last release line on its torch 2.6): the adapter asks for neither
  (NeMo-Aligner recomputes log-probs; a plain ``load_weights`` refits on GPU) and uses only what 0.8.5 has.

Checked here with a stand-in ``vllm`` module for the engine's feature switches, the pins against the Dockerfile, and,
when ``OCTO_VLLM_ALIGNER_WHEEL`` names the vllm 0.8.5 wheel (``pip download --no-deps vllm==0.8.5``), against
that release's own source: every vLLM name the adapter's path uses is there, and the two newer features are not.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import sys
import types
import zipfile
from pathlib import Path

import pytest

from megatron_octo import version
from megatron_octo.rollout import vllm_engine
from megatron_octo.rollout.vllm_engine import RolloutError, VLLMEngineConfig

REPO = Path(__file__).resolve().parents[2]


def test_aligner_vllm_pin_matches_the_dockerfile():
    text = (REPO / "containers" / "Dockerfile.aligner").read_text()
    assert set(re.findall(r"ARG VLLM_VERSION=(\S+)", text)) == {version.VLLM_ALIGNER} == {"0.8.5"}


def _fake_vllm(monkeypatch, *, logprobs_mode: bool, reload: bool) -> list:
    """A ``vllm`` package whose EngineArgs has (or lacks) ``logprobs_mode``; LLM records its keyword arguments."""
    calls = []
    fields = {"worker_extension_cls": str, **({"logprobs_mode": str} if logprobs_mode else {})}
    engine_args = dataclasses.make_dataclass("EngineArgs", [(k, t, dataclasses.field(default="")) for k, t in
                                                            fields.items()])
    root = types.ModuleType("vllm")
    root.__version__ = "0.test"
    root.LLM = lambda **kw: calls.append(kw) or "llm"
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_sleep_mode_available=lambda: True, device_type="cpu")
    engine = types.ModuleType("vllm.engine")
    arg_utils = types.ModuleType("vllm.engine.arg_utils")
    arg_utils.EngineArgs = engine_args
    mods = {"vllm": root, "vllm.platforms": platforms, "vllm.engine": engine, "vllm.engine.arg_utils": arg_utils,
            "vllm.model_executor": types.ModuleType("vllm.model_executor"),
            "vllm.model_executor.model_loader": types.ModuleType("vllm.model_executor.model_loader")}
    if reload:
        mods["vllm.model_executor.model_loader.reload"] = types.ModuleType("vllm.model_executor.model_loader.reload")
    for name, mod in mods.items():
        mod.__spec__ = types.SimpleNamespace(name=name, loader=None, submodule_search_locations=[])
        mod.__path__ = []  # a package: find_spec looks for submodules on it (there are none on disk)
        monkeypatch.setitem(sys.modules, name, mod)
    if not reload:
        monkeypatch.delitem(sys.modules, "vllm.model_executor.model_loader.reload", raising=False)
    return calls


def test_octo_rl_refuses_a_vllm_without_processed_logprobs(monkeypatch):
    _fake_vllm(monkeypatch, logprobs_mode=False, reload=False)
    with pytest.raises(RolloutError, match="has no logprobs_mode"):
        vllm_engine._start_llm(VLLMEngineConfig(model_dir="m"))


def test_adapter_config_runs_on_a_vllm_without_processed_logprobs(monkeypatch):
    calls = _fake_vllm(monkeypatch, logprobs_mode=False, reload=False)
    assert vllm_engine._start_llm(VLLMEngineConfig(model_dir="m", processed_logprobs=False)) == "llm"
    assert "logprobs_mode" not in calls[0] and calls[0]["worker_extension_cls"] == vllm_engine.WORKER_EXTENSION
    assert vllm_engine._layerwise_reload() is None  # refits with the model's own load_weights


def test_newer_vllm_gets_processed_logprobs_and_layerwise_reload(monkeypatch):
    calls = _fake_vllm(monkeypatch, logprobs_mode=True, reload=True)
    vllm_engine._start_llm(VLLMEngineConfig(model_dir="m"))
    assert calls[0]["logprobs_mode"] == "processed_logprobs"
    assert vllm_engine._layerwise_reload() is sys.modules["vllm.model_executor.model_loader.reload"]


def test_the_adapter_asks_for_no_processed_logprobs(monkeypatch):
    from megatron_octo.serve import aligner_adapter, generation

    seen = {}
    monkeypatch.setattr(generation.GenerationService, "start", classmethod(lambda cls, cfg: seen.setdefault("c", cfg)))
    adapter = aligner_adapter.VLLMGenerate({"ppo": {"vllm": {"model_dir": "m"}}}, end_strings=["User:"],
                                           tokenizer=types.SimpleNamespace(eos_id=2))
    aligner_adapter._start_service(adapter.settings, adapter)
    assert seen["c"].engine.processed_logprobs is False


def _wheel():
    path = os.environ.get("OCTO_VLLM_ALIGNER_WHEEL")
    if not path or not Path(path).is_file():
        pytest.skip("set OCTO_VLLM_ALIGNER_WHEEL to the vllm 0.8.5 wheel (pip download --no-deps vllm==0.8.5) to check "
                    "the adapter's vLLM names against that release's source")
    return zipfile.ZipFile(path)


def _class_members(source: str, cls: str) -> set:
    tree = ast.parse(source)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
    names = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names | {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def test_vllm_0_8_5_has_what_the_adapter_uses():
    wheel = _wheel()
    read = lambda name: wheel.read(name).decode()  # noqa: E731
    engine_args = _class_members(read("vllm/engine/arg_utils.py"), "EngineArgs")
    assert {"worker_extension_cls", "enable_sleep_mode", "enable_prefix_caching", "max_model_len"} <= engine_args
    assert "logprobs_mode" not in engine_args  # hence processed_logprobs=False for the adapter
    llm = _class_members(read("vllm/entrypoints/llm.py"), "LLM")
    assert {"generate", "collective_rpc", "sleep", "wake_up", "reset_prefix_cache"} <= llm
    sampling = _class_members(read("vllm/sampling_params.py"), "SamplingParams")
    assert {"include_stop_str_in_output", "stop", "seed", "logprobs", "n", "top_p", "temperature"} <= sampling
    assert "vllm/model_executor/model_loader/reload.py" not in wheel.namelist()  # hence the plain load_weights
    assert "def set_current_vllm_config" in read("vllm/config.py")
