"""What ``import megatron.core`` costs in every process, cut where nothing we run needs it.

Two costs of Megatron-Core's import, measured on a CPU (importing its model, optimizer and checkpointing: 10 s):

- ``torch.compile`` decorations, 4.5 s. Megatron-Core's ``jit_fuser`` is ``torch.compile``; its fusion modules
  (bias-GeLU, SwiGLU, RoPE, ...) decorate about forty functions with it at import, and each decoration imports
  TorchDynamo and Inductor. On a CPU those functions run eagerly anyway (``parallel.cpu_compat`` turns Dynamo off:
  Inductor would build C++ for kernels that exist to save GPU memory bandwidth). Megatron-Core offers
  ``megatron.core.jit.disable_jit_fuser()``, but the fusion modules bind ``jit_fuser`` when they are imported, so it
  only helps between the import of ``megatron.core.jit`` and theirs: it is run there, where
  ``torch.cuda.is_available()`` is False. On a GPU machine the fusions stay compiled.
- ``wandb``, 0.9 s. Megatron-Core imports it, if installed, for its inference engine's and timers' own W&B logging,
  which megatron-octo does not use (our W&B logging is ``training/wandb_log.py``, which imports it when a run asks
  for it). While the ``megatron.core`` package itself executes, ``wandb`` is hidden (unless it is already
  imported), so Megatron-Core takes its no-W&B path; afterwards ``import wandb`` works as usual.

Contract: ``install()`` is cheap (no torch import), idempotent, and each part is a no-op when its module is already
imported; each finder acts once and removes itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Callable, Optional, Sequence


def _disable_jit_fuser_on_cpu(module: ModuleType, run: Callable[[], None]) -> None:
    run()
    import torch  # already imported: megatron.core.jit imports it

    disable = getattr(module, "disable_jit_fuser", None)
    if disable is not None and not torch.cuda.is_available():
        disable()


def _without_wandb(module: ModuleType, run: Callable[[], None]) -> None:
    if "wandb" in sys.modules:  # imported already (by the user, or a test): Megatron-Core may use it
        run()
        return
    sys.modules["wandb"] = None  # type: ignore[assignment]  # `import wandb` raises ImportError meanwhile
    try:
        run()
    finally:
        if sys.modules.get("wandb", 0) is None:
            del sys.modules["wandb"]


_AROUND = {"megatron.core": _without_wandb, "megatron.core.jit": _disable_jit_fuser_on_cpu}


class _Around(importlib.abc.Loader):
    """The real loader, with ``around(module, run)`` wrapped around its ``exec_module``."""

    def __init__(self, inner: importlib.abc.Loader, around: Callable[[ModuleType, Callable[[], None]], None]):
        self.inner, self.around = inner, around

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.around(module, lambda: self.inner.exec_module(module))


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, name: str):
        self.name = name

    def find_spec(self, name: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None):
        if name != self.name:
            return None
        _remove(self.name)  # one shot: the module is imported once per process
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Around(spec.loader, _AROUND[name])
        return spec


def _remove(name: str) -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not (isinstance(f, _Finder) and f.name == name)]


def install() -> None:
    """Put the finders first on ``sys.meta_path``, each unless installed or its module is imported already."""
    for name in _AROUND:
        if name not in sys.modules and not any(isinstance(f, _Finder) and f.name == name for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder(name))


def uninstall() -> None:
    """Remove the finders (tests; once they have acted they are gone already)."""
    for name in _AROUND:
        _remove(name)
