"""Measuring the memory a piece of code allocates, on CPU as on GPU.

- ``TensorBytesProbe``: bytes of tensor storage created inside the block and still alive, and their peak. A
  ``TorchDispatchMode`` sees every operator; an output whose storage is none of its inputs' is a new allocation
  (views and in-place results share an input's storage and are not counted), and a weak-reference finalizer on the
  storage subtracts it when the last tensor using it dies. Python objects (e.g. ``bytes`` for an RPC) are measured
  too, through ``tracemalloc``; ``peak_bytes`` adds both peaks (an upper bound of the combined peak).
  Storages made outside the dispatcher (``torch.frombuffer``, tensors from NumPy) are not seen.
- ``RSSSampler``: the process's resident set size sampled in a thread (what a benchmark reports as host memory).
- On CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` is the device figure.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
import weakref
from typing import Dict, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorBytesProbe(TorchDispatchMode):
    """``with TensorBytesProbe() as probe: ...`` then ``probe.peak_tensor_bytes`` / ``probe.peak_bytes``."""

    def __init__(self, python: bool = True):
        super().__init__()
        self.python = python
        self.live: Dict[int, int] = {}
        self.current = 0
        self.peak_tensor_bytes = 0
        self.peak_python_bytes = 0
        self._started_tracemalloc = False

    # -- tensors ----------------------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_storage_key(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                key = _storage_key(t)
                if key not in inputs and key not in self.live:
                    self._track(t.untyped_storage(), key)
        return out

    def _track(self, storage, key: int) -> None:
        size = storage.nbytes()
        self.live[key] = size
        self.current += size
        self.peak_tensor_bytes = max(self.peak_tensor_bytes, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    # -- python objects ---------------------------------------------------------------------------------------------
    def __enter__(self):
        if self.python and not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started_tracemalloc = True
        if self.python:
            tracemalloc.reset_peak()
            self._python_base = tracemalloc.get_traced_memory()[0]
        return super().__enter__()

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        if self.python:
            self.peak_python_bytes = max(0, tracemalloc.get_traced_memory()[1] - self._python_base)
            if self._started_tracemalloc:
                tracemalloc.stop()
        return result

    @property
    def peak_bytes(self) -> int:
        return self.peak_tensor_bytes + self.peak_python_bytes


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


class RSSSampler:
    """Peak resident set size above the value at entry, sampled every ``interval_s`` in a thread."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self.base = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> "RSSSampler":
        self.base = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def peak_above_base(self) -> int:
        return self.peak - self.base
