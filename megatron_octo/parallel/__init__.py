"""Process groups: built once from the torchrun environment, then handed down as a ``ParallelContext``.

``initialize`` is the only place that creates process groups. Megatron-Core keeps its own module-level copies in
``megatron.core.parallel_state`` (its schedules and optimizers read them); our code never does, it reads the
``ParallelContext`` it is given.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from megatron_octo.config.schema import ParallelConfig
from megatron_octo.errors import OctoError
from megatron_octo.parallel import cpu_compat


class ParallelSetupError(OctoError, ValueError):
    """The launch environment and the requested layout do not fit together."""


@dataclass(frozen=True)
class ParallelContext:
    """Where this process sits in the TP x CP x DP x PP grid, and the groups to talk to the others."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    tp: int
    pp: int
    cp: int
    dp: int
    tp_rank: int
    pp_rank: int
    cp_rank: int
    dp_rank: int
    pgs: Any
    """Megatron-Core ``ProcessGroupCollection`` (untyped library object) (tp, pp, cp, dp, dp_cp, mp, embd, ...)."""
    cpu_compat: bool
    """Whether the CPU compatibility layer is on in this process."""

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1

    @property
    def is_main(self) -> bool:
        """Global rank 0: the process that writes logs and reports."""
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None else int(value)


def _init_process_group(backend: str, timeout_s: int) -> None:
    """Join the torchrun world, or make a world of one when not launched by torchrun.

    The world of one rendezvous on a free loopback port given explicitly, so nothing is written to ``os.environ``
    (a child process started later must not inherit a stale rank or port).
    """
    timeout = datetime.timedelta(seconds=timeout_s)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(
            backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1, timeout=timeout
        )


def check_layout(cfg: ParallelConfig, world_size: int) -> int:
    """Return the data-parallel size, or raise a one-line error when the world cannot hold the layout."""
    model_parallel = cfg.tp * cfg.pp * cfg.cp
    if world_size % model_parallel:
        raise ParallelSetupError(
            f"world size {world_size} is not divisible by parallel.tp*pp*cp = "
            f"{cfg.tp}*{cfg.pp}*{cfg.cp} = {model_parallel}: launch a multiple of {model_parallel} processes "
            f"or change the layout"
        )
    return world_size // model_parallel


def initialize(cfg: ParallelConfig, seed: int, timeout_s: int = 600) -> ParallelContext:
    """Initialize torch.distributed and Megatron-Core's model-parallel groups for ``cfg``.

    NCCL on CUDA (one GPU a process, chosen by LOCAL_RANK); gloo plus the CPU compatibility layer otherwise.
    """
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.process_groups_config import ProcessGroupCollection

    use_cuda = torch.cuda.is_available()
    local_rank = _env_int("LOCAL_RANK", 0)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    compat = cpu_compat.enable()
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        _init_process_group(backend, timeout_s)
    world_size = dist.get_world_size()
    dp = check_layout(cfg, world_size)
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=cfg.tp,
        pipeline_model_parallel_size=cfg.pp,
        context_parallel_size=cfg.cp,
        create_gloo_process_groups=not use_cuda or cfg.distributed_optimizer,
    )
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    pgs = ProcessGroupCollection.use_mpu_process_groups()
    return ParallelContext(
        rank=dist.get_rank(),
        world_size=world_size,
        local_rank=local_rank,
        device=device,
        backend=backend,
        tp=cfg.tp,
        pp=cfg.pp,
        cp=cfg.cp,
        dp=dp,
        tp_rank=dist.get_rank(pgs.tp),
        pp_rank=dist.get_rank(pgs.pp),
        cp_rank=dist.get_rank(pgs.cp),
        dp_rank=dist.get_rank(pgs.dp),
        pgs=pgs,
        cpu_compat=compat,
    )


def destroy(ctx: Optional[ParallelContext] = None) -> None:
    """Tear down Megatron-Core's groups and the default process group (safe to call twice)."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
