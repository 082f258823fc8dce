"""NeMo 2.2 on a CPU without apex or Transformer Engine: the few stand-ins its GPT restore path needs.

NeMo 2.2's ``MegatronGPTModel`` supports building on a CPU accelerator, but a few module-level gates assume the NGC
container. Each stand-in below does what the real thing does for this case, and nothing else:

- ``megatron_octo.parallel.cpu_compat``: the main stack's CPU layer (plain torch, importable here) for
  ``torch.cuda.set_device`` and Megatron-Core's CUDA RNG tracker.
- ``NVIDIA_PYTORCH_VERSION``: NeMo's ``_enable_nvidia_optimizations`` passes it to ``re.fullmatch`` unguarded
  (a TypeError outside the container); 25.01 is the PyTorch container NeMo 2.2.1 names in its manifest.
- ``nlp_overrides.HAVE_APEX``: ``NLPDDPStrategy.__init__`` refuses to start without apex, which the restore path
  does not otherwise use (apex is not on PyPI).
- ``build_model.set_defaults_if_not_set_tensor_model_parallel_attributes``: NeMo imports it from apex;
  Megatron-Core has the same function (apex's was its origin), which is bound in its place.
- ``nlp_model.get_megatron_pretrained_bert_models``: NeMo's NLPModel imports the BERT spec (which needs TE) to
  list pretrained BERT names; a GPT has no ``language_model.pretrained_model_name``, so the list is irrelevant.
- ``megatron_gpt_model.get_specs``: builds every spec name's layer spec, including TE-only ones (gemma2, te_gpt);
  the stand-in returns what it returns for ``name=''`` with ``transformer_engine=False``: Megatron-Core's local
  GPT layer spec, and refuses anything else.
- ``megatron.utils.listify_model`` (NeMo's weight-decay parameter groups, i.e. any optimizer): imported from apex's
  pipeline schedules; apex's is "a list stays, a module becomes [module]", which the stand-in does. The same function
  checks modules against apex's norm classes (``FusedLayerNorm``, ``FastLayerNorm``, ``MixedFusedRMSNorm``): without
  apex no module is one, so each is bound to a class nothing is an instance of.
- ``torch.cuda.LongTensor`` / ``torch.cuda.FloatTensor`` (the legacy typed constructors NeMo-Aligner's servers and
  clients build their command and result tensors with, and the types NeMo's gradient clipping asserts gradients
  are; CPU torch refuses both): the CPU constructors, and a CPU tensor of that dtype counts as an instance.
- ``torch.distributed.all_gather_into_tensor``: NeMo-Aligner's ``rebalance_nd_tensor`` gathers a 0-d count into a
  [world] tensor, which NCCL accepts (it goes by element count) and gloo refuses (input shape must equal an output
  chunk's); the stand-in passes a 0-d input as shape [1], the same element, and is otherwise the real call.
- ``clip_grads.multi_tensor_applier`` / ``clip_grads.amp_C`` (NeMo's gradient clipping, which NeMo-Aligner's
  trainers call every step): apex's fused L2 norm; Megatron-Core ships the drop-ins for machines without apex
  (``local_multi_tensor_applier``, ``local_multi_tensor_l2_norm``, ``local_multi_tensor_scale``), bound in their place.
- ``nlp_overrides.McoreDistributedOptimizer`` / ``MegatronDistributedFusedAdam`` (checked by NeMo's checkpoint save
  for the optimizer's kind; imported in one ``try`` with apex's distributed Adam, so both are unbound without apex):
  the first is importable alone and bound to the real class; the apex one to a class nothing is an instance of.
- ``filesystem_async._write_item`` (Megatron-Core 0.11's checkpoint writer, every NeMo checkpoint save): it calls
  torch's private ``_write_item(stream, data, write_item, storage_key)``, the signature of the torch its container
  shipped; this venv's torch 2.13 also takes the stream transforms and serialization format first and last. Bound
  to a function passing torch's own defaults (no transforms, ``torch_save``), as torch's ``FileSystemWriter`` does.
  Not about the CPU: the pinned torch is newer than Megatron-Core 0.11 knows.
- ``megatron_gpt_reward_model.get_specs`` (NeMo-Aligner's reward model and critic): it binds NeMo's ``get_specs`` at
  import and calls it without ``use_te``, i.e. the TE spec (its GPU path); here the local spec, which declares the
  same checkpoint keys (``reward_model_specs``).
"""

from __future__ import annotations

import os

_applied = {"done": False}


def local_specs(spec_name, transformer_config=None, use_te=True, hyena_cfg=None, fp8=False):
    """NeMo's ``get_specs`` for the one case this environment can build."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    if spec_name != "" or use_te:
        raise RuntimeError(f"only the local layer spec runs here (asked for name={spec_name!r}, use_te={use_te}): "
                           f"set model.transformer_engine=false")
    return get_gpt_layer_local_spec(transformer_config.num_moe_experts, transformer_config.moe_grouped_gemm)


def reward_model_specs(spec_name, transformer_config=None, use_te=True, hyena_cfg=None, fp8=False):
    """NeMo-Aligner's reward-model ``get_specs`` call (always ``use_te=True``) answered with the local spec."""
    return local_specs(spec_name, transformer_config, use_te=False)


def _typed_tensor(name: str, dtype):
    """``torch.cuda.<name>`` on a CPU: constructs the CPU tensor; isinstance holds for a tensor of ``dtype``."""
    import torch

    class Meta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, torch.Tensor) and obj.dtype == dtype

    def new(cls, *args, **kwargs):
        return getattr(torch, name)(*args, **kwargs)

    return Meta(name, (), {"__new__": new})


def _bind_torch_write_item() -> None:
    import inspect

    from megatron.core.dist_checkpointing.strategies import filesystem_async
    from torch.distributed.checkpoint import filesystem

    if "transforms" not in inspect.signature(filesystem._write_item).parameters:
        return  # the signature Megatron-Core 0.11 was written for

    def write_item(stream, data, write_item, storage_key):
        return filesystem._write_item(filesystem._StorageWriterTransforms(), stream, data, write_item, storage_key,
                                      filesystem.SerializationFormat.TORCH_SAVE)

    filesystem_async._write_item = write_item


def apply() -> None:
    """Install the stand-ins (idempotent)."""
    if _applied["done"]:
        return
    os.environ.setdefault("NVIDIA_PYTORCH_VERSION", "25.01")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    from megatron_octo.parallel import cpu_compat

    cpu_compat.enable()
    from megatron.core.tensor_parallel.layers import set_defaults_if_not_set_tensor_model_parallel_attributes
    from nemo.collections.nlp.models import nlp_model
    from nemo.collections.nlp.models.language_modeling import megatron_gpt_model
    from nemo.collections.nlp.modules.common.megatron import build_model
    from nemo.collections.nlp.parts import nlp_overrides

    nlp_overrides.HAVE_APEX = True
    from nemo.core.optim.mcore_optim import McoreDistributedOptimizer

    nlp_overrides.McoreDistributedOptimizer = McoreDistributedOptimizer
    for name in ("MegatronDistributedFusedAdam", "MainParamsOptimizerWrapper"):
        if not hasattr(nlp_overrides, name):
            setattr(nlp_overrides, name, type(name, (), {"__doc__": "apex is absent: nothing is an instance"}))
    build_model.set_defaults_if_not_set_tensor_model_parallel_attributes = (
        set_defaults_if_not_set_tensor_model_parallel_attributes)
    nlp_model.get_megatron_pretrained_bert_models = lambda: []
    from nemo.collections.nlp.modules.common.megatron import utils as megatron_utils

    import torch

    for name, dtype in (("LongTensor", torch.long), ("FloatTensor", torch.float32)):
        setattr(torch.cuda, name, _typed_tensor(name, dtype))
    import types

    from megatron.core import utils as mcore_utils
    from nemo.collections.nlp.modules.common.megatron import clip_grads

    clip_grads.multi_tensor_applier = mcore_utils.local_multi_tensor_applier
    clip_grads.amp_C = types.SimpleNamespace(multi_tensor_l2norm=mcore_utils.local_multi_tensor_l2_norm,
                                             multi_tensor_scale=mcore_utils.local_multi_tensor_scale)
    _bind_torch_write_item()
    gather = torch.distributed.all_gather_into_tensor

    def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
        if input_tensor.dim() == 0:
            input_tensor = input_tensor.reshape(1)
        return gather(output_tensor, input_tensor, group=group, async_op=async_op)

    torch.distributed.all_gather_into_tensor = all_gather_into_tensor
    megatron_utils.listify_model = lambda model: model if isinstance(model, list) else [model]
    for name in ("FusedLayerNorm", "FastLayerNorm", "MixedFusedRMSNorm"):
        if not hasattr(megatron_utils, name):
            setattr(megatron_utils, name, type(name, (), {"__doc__": "apex is absent: nothing is an instance"}))
    megatron_gpt_model.get_specs = local_specs
    from nemo_aligner.models.nlp.gpt import megatron_gpt_reward_model

    megatron_gpt_reward_model.get_specs = reward_model_specs
    _applied["done"] = True


def cpu_overrides(cfg) -> None:
    """What a CPU run changes in an exported model_config.yaml (an OmegaConf DictConfig, edited in place): the
    local layer spec, one process (the weights are global tensors, so any layout loads them), fp32."""
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.transformer_engine = False
        cfg.tensor_model_parallel_size = 1
        cfg.pipeline_model_parallel_size = 1
        cfg.precision = 32


# -- PyTriton, in process -----------------------------------------------------------------------------------------
# NeMo-Aligner's critic server (``CriticServerTrainer``) and its clients (``HTTPCommunicator`` over PyTriton's
# ``FuturesModelClient``) import PyTriton. requirements/aligner.txt pins the release that runs beside NeMo 2.2's
# protobuf 3.20.3 and test_ppo_step serves over it; for a venv without it, ``inprocess_pytriton()`` registers a minimal ``pytriton``
# package whose ``FuturesModelClient(url, model_name)`` calls the server function bound to ``model_name`` in
# ``SERVERS`` directly and returns a completed future: the transport (HTTP + Triton's batcher) is what is replaced,
# every NeMo-Aligner function on both sides is its own. The decorators ``batch`` and ``sample`` are identities: a
# decorated server function is called with what PyTriton would hand its body (the request's arrays by name).

SERVERS: dict = {}


def in_cpu_mode(fn):
    """``fn`` run under the CPU layer's device mode (``cpu_compat.CudaToCpuMode``) in whatever thread calls it: torch
    function modes are per thread, and PyTriton calls a server's functions on threads of its own, where the
    ``device="cuda"`` tensors NeMo-Aligner's server code makes would otherwise fail."""
    import functools

    from megatron_octo.parallel.cpu_compat import CudaToCpuMode

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with CudaToCpuMode():
            return fn(*args, **kwargs)

    return call


class _InProcessClient:
    """``pytriton.client.FuturesModelClient`` for a server function in ``SERVERS``."""

    def __init__(self, url, model_name, *args, **kwargs):
        self.url, self.model_name = url, model_name

    def _call(self, inputs):
        from concurrent.futures import Future

        future = Future()
        if self.model_name not in SERVERS:
            future.set_exception(RuntimeError(f"no server bound to {self.model_name!r} (at {self.url})"))
        else:
            future.set_result(SERVERS[self.model_name](**inputs))
        return future

    def infer_batch(self, **inputs):
        return self._call(inputs)

    def infer_sample(self, **inputs):
        return self._call(inputs)

    def close(self):
        pass


def inprocess_pytriton() -> None:
    """Register the in-process ``pytriton`` package (see above); refuses when the real one is importable."""
    import importlib.util
    import sys
    import types

    if "pytriton" in sys.modules and not getattr(sys.modules["pytriton"], "_octo_inprocess", False):
        raise RuntimeError("the real PyTriton is imported: the in-process stand-in is not needed")
    if importlib.util.find_spec("pytriton") is not None and "pytriton" not in sys.modules:
        raise RuntimeError("PyTriton is installed: run NeMo-Aligner's servers over it instead")

    def identity(fn):
        return fn

    class _Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no Triton server in this process (in-process PyTriton stand-in)")

    def _Spec(*args, **kwargs):  # ModelConfig / Tensor / DynamicBatcher: descriptions only
        return types.SimpleNamespace(args=args, **kwargs)

    modules = {
        "pytriton": {"_octo_inprocess": True},
        "pytriton.client": {"FuturesModelClient": _InProcessClient, "ModelClient": _InProcessClient},
        "pytriton.decorators": {"batch": identity, "sample": identity},
        "pytriton.model_config": {"ModelConfig": _Spec, "Tensor": _Spec},
        "pytriton.model_config.common": {"DynamicBatcher": _Spec},
        "pytriton.triton": {"Triton": _Unavailable, "TritonConfig": _Spec},
    }
    for name, attrs in modules.items():
        module = sys.modules.get(name) or types.ModuleType(name)
        vars(module).update(attrs)
        sys.modules[name] = module
