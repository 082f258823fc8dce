#!/usr/bin/env python
"""Write a torch_dist checkpoint's model tensors and common state again as an older Megatron-Core's ``zarr``
distributed checkpoint, with that Megatron-Core's own ``dist_checkpointing.save(..., ('zarr', 1))``.

Run by ``tools/megatron_lm_fixtures.py --zarr-megatron-core DIR`` with ``PYTHONPATH`` putting an older
``megatron.core`` (one that still has ``dist_checkpointing/strategies/zarr.py``, e.g. the core_v0.8.0 sources) and the
``zarr`` 2.x package first; the tensors are read with torch.distributed.checkpoint (no megatron import needed)::

    python tools/megatron_core_zarr_writer.py SRC_TORCH_DIST_DIR COMMON.pt DST_DIR

``COMMON.pt``: the source's common state with its args reduced to plain Python values (the newer Megatron-LM's args
hold enums this Megatron-Core does not define; ``megatron_lm_fixtures.plain_common`` writes it).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch


def main(src: str, common_file: str, dst: str) -> int:
    import torch.distributed as dist
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("gloo", rank=0, world_size=1)
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(src, f"{tmp}/all.pt")
        tensors = {k: v for k, v in torch.load(f"{tmp}/all.pt", weights_only=True).items()
                   if isinstance(v, torch.Tensor) and not k.startswith("optimizer.")}
    common = torch.load(common_file, weights_only=False)

    torch.cuda.synchronize = lambda *a, **k: None  # the zarr strategy synchronizes CUDA before each write; CPU here
    import megatron.core
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing import ShardedTensor

    from megatron.core.package_info import __version__

    print(f"megatron-core {__version__} (dist_checkpointing zarr strategy)", flush=True)
    state = {k: ShardedTensor.from_rank_offsets(k, t.contiguous(), replica_id=0) for k, t in tensors.items()}
    state.update({k: v for k, v in common.items() if k in ("args", "checkpoint_version", "iteration",
                                                          "num_floating_point_operations_so_far")})
    Path(dst).mkdir(parents=True)
    dist_checkpointing.save(state, dst, ("zarr", 1))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
