"""Megatron-Core's fused elementwise functions without ``torch.compile`` where CUDA is absent.

Megatron-Core's ``jit_fuser`` is ``torch.compile``; its fusion modules (bias-GeLU, SwiGLU, RoPE, ...) decorate about
forty functions with it at import, and each decoration imports TorchDynamo and Inductor: 4.5 of the 10 s that
``import megatron.core`` (models, optimizer, checkpointing) takes on a CPU, in every process. On a CPU those
functions run eagerly anyway (``parallel.cpu_compat`` turns Dynamo off: Inductor would build C++ for kernels that
exist to save GPU memory bandwidth). Megatron-Core offers ``megatron.core.jit.disable_jit_fuser()``, but its fusion
modules bind ``jit_fuser`` when they are imported, so it only helps if it runs between the import of
``megatron.core.jit`` and theirs: the finder below runs it there, once, and only when ``torch.cuda.is_available()``
is False. On a GPU machine nothing changes.

Contract: ``install()`` is cheap (no torch import), idempotent, and a no-op when ``megatron.core.jit`` is already
imported (the decorations have happened; disabling later would change nothing).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Optional, Sequence

_TARGET = "megatron.core.jit"


class _DisableOnCpu(importlib.abc.Loader):
    """Runs the real loader, then Megatron-Core's own ``disable_jit_fuser()`` where CUDA is absent."""

    def __init__(self, inner: importlib.abc.Loader):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        import torch  # already imported: megatron.core.jit imports it

        disable = getattr(module, "disable_jit_fuser", None)
        if disable is not None and not torch.cuda.is_available():
            disable()


class _JitFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None):
        if name != _TARGET:
            return None
        uninstall()  # one shot: the module is imported once per process
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _DisableOnCpu(spec.loader)
        return spec


def install() -> None:
    """Put the finder first on ``sys.meta_path`` unless it is there or ``megatron.core.jit`` is already imported."""
    if _TARGET in sys.modules or any(isinstance(f, _JitFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _JitFinder())


def uninstall() -> None:
    """Remove the finder (tests; after it has fired it is gone already)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _JitFinder)]
