"""Which GPU a colocated vLLM engine starts on. vLLM runs its engine in a child process that would take GPU 0 on
every rank of a node; pinning CUDA_VISIBLE_DEVICES to the rank's own GPU while the engine starts fixes that (the
child inherits the value; this process already has its CUDA context and is unaffected)."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

from megatron_octo.rollout.vllm_engine import RolloutError


def physical_device(index: int, visible: Optional[str]) -> str:
    """Entry ``index`` of a CUDA_VISIBLE_DEVICES list (the index itself when the variable is unset)."""
    if not visible:
        return str(index)
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    if index >= len(entries):
        raise RolloutError(f"CUDA device {index} is not among CUDA_VISIBLE_DEVICES={visible!r}")
    return entries[index]


def this_rank_gpu() -> Optional[str]:
    """The physical GPU this process uses, as CUDA_VISIBLE_DEVICES names it (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return physical_device(torch.cuda.current_device(), os.environ.get("CUDA_VISIBLE_DEVICES"))


@contextlib.contextmanager
def pinned_to(device: Optional[str]):
    """CUDA_VISIBLE_DEVICES = ``device`` inside the block (nothing changes for None), restored afterwards."""
    if device is None:
        yield
        return
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    try:
        yield
    finally:
        if old is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old
