"""Run Megatron-Core on a machine without CUDA.

Megatron-Core 0.16 assumes CUDA in a few places that are not about computation: tensors created with
``device='cuda'``, ``torch.cuda.current_device()``, the CUDA RNG state used by its RNG tracker, streams and events,
and ``param.grad.type() == 'torch.cuda.FloatTensor'`` checks in the optimizers. This module maps exactly those to
the CPU so that GPTModel, DDP, the (distributed) optimizer and the pipeline schedules run over gloo.

Contract:
- ``enable()`` switches the layer on only where CUDA is absent (``torch.cuda.is_available()`` is False) and
  returns whether it is on; calling it again is a no-op. It must never change behaviour on a CUDA machine.
- ``disable()`` undoes everything (used by tests).
- ``torch.cuda.is_available()`` keeps returning False, so code that branches on it still takes its CPU path.
- While the layer is on, TorchDynamo is off (``torch._dynamo.config.disable``): Megatron-Core wraps its fused
  elementwise functions (bias-GeLU, SwiGLU, RoPE, ...) in ``torch.compile`` (``megatron.core.jit.jit_fuser``), and on
  a CPU each first call makes Inductor generate and build C++ in worker processes: 10-15 s of every process's start
  for kernels that exist to save GPU memory bandwidth. Eager runs the same functions.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict

import torch
from torch.overrides import TorchFunctionMode

_CUDA_TYPE_NAMES = {
    torch.float32: "torch.cuda.FloatTensor",
    torch.float16: "torch.cuda.HalfTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
}
_state: Dict[str, Any] = {"mode": None, "saved": []}


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare index is what ``torch.cuda.current_device()`` returns: it means a CUDA device.
    return isinstance(device, int) and not isinstance(device, bool)


def _cpu_args(args: tuple) -> tuple:
    """``x.to('cuda')`` / ``x.to(torch.device('cuda', 0))``: the device may come positionally."""
    return tuple(torch.device("cpu") if _is_cuda(a) else a for a in args)


class CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments to CPU and makes ``Tensor.type()`` report the CUDA type name."""

    def __torch_function__(self, func: Callable, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = torch.device("cpu")
        if kwargs.get("pin_memory"):  # page-locked host memory stages copies to a GPU; without one it cannot exist
            kwargs["pin_memory"] = False
        if func is torch.Tensor.cuda:
            kwargs.pop("device", None)
            kwargs.pop("non_blocking", None)
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # Megatron's optimizers assert the CUDA type string of fp32 params and grads.
            name = _CUDA_TYPE_NAMES.get(args[0].dtype)
            if name is not None:
                return name
        if func is torch.Tensor.to:  # new_empty/new_zeros/new_ones take device by keyword only (handled above)
            args = _cpu_args(args)
        return func(*args, **kwargs)


class _NullStream:
    """Stands in for ``torch.cuda.Stream``: every operation runs at once on the CPU."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def wait_event(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def record_event(self, event=None):
        return event or _NullEvent()


class _NullEvent:
    """Stands in for ``torch.cuda.Event``."""

    def __init__(self, *args, **kwargs):
        pass

    def record(self, *args, **kwargs):
        pass

    def wait(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


def _cuda_replacements() -> Dict[str, Any]:
    """The ``torch.cuda`` attributes replaced while the layer is on, with their CPU meanings."""
    return {
        "current_device": lambda: 0,
        "device_count": lambda: 1,
        "set_device": lambda *a, **k: None,
        "synchronize": lambda *a, **k: None,
        "empty_cache": lambda: None,
        "get_rng_state": lambda device="cuda": torch.get_rng_state(),
        "set_rng_state": lambda state, device="cuda": torch.set_rng_state(state),
        "manual_seed": lambda seed: None,
        "manual_seed_all": lambda seed: None,
        "memory_allocated": lambda *a, **k: 0,
        "max_memory_allocated": lambda *a, **k: 0,
        "memory_reserved": lambda *a, **k: 0,
        "Stream": _NullStream,
        "Event": _NullEvent,
        "current_stream": lambda *a, **k: _NullStream(),
        "default_stream": lambda *a, **k: _NullStream(),
        "stream": lambda *a, **k: contextlib.nullcontext(),
        # Megatron's RNG tracker reads and writes the CUDA generator; the CPU generator stands in for it.
        "default_generators": (torch.default_generator,),
        "_lazy_call": lambda fn, **kwargs: fn(),
    }


def _cuda_random_replacements() -> Dict[str, Any]:
    """The ``torch.cuda.random`` functions replaced while the layer is on."""
    return {
        "get_rng_state": lambda device="cuda": torch.get_rng_state(),
        "set_rng_state": lambda state, device="cuda": torch.set_rng_state(state),
    }


def enable() -> bool:
    """Switch the layer on where CUDA is absent; return True when it is on."""
    if torch.cuda.is_available():
        return False
    if _state["mode"] is not None:
        return True
    saved = []
    from torch._dynamo import config as dynamo_config

    for module, replacements in (
        (torch.cuda, _cuda_replacements()),
        (torch.cuda.random, _cuda_random_replacements()),
        (dynamo_config, {"disable": True}),
    ):
        for name, value in replacements.items():
            saved.append((module, name, getattr(module, name, None)))
            setattr(module, name, value)
    _state["saved"] = saved
    mode = CudaToCpuMode()
    mode.__enter__()
    _state["mode"] = mode
    return True


def disable() -> None:
    """Undo ``enable()``."""
    mode = _state["mode"]
    if mode is None:
        return
    mode.__exit__(None, None, None)
    for module, name, value in reversed(_state["saved"]):
        if value is None:
            delattr(module, name)
        else:
            setattr(module, name, value)
    _state["mode"], _state["saved"] = None, []


def is_enabled() -> bool:
    """Whether the layer is on in this process."""
    return _state["mode"] is not None
