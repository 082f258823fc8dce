"""What a launch needs: one dataclass for the Slurm job, one for a single-node run, and the job they start.

Every field is documented once, here; ``megatron_octo.cli`` fills them from flags. Checks that span fields live in
``megatron_octo.launch.layout`` and raise ``LaunchError`` with one line naming the problem and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from megatron_octo.errors import OctoError

NCCL_DEFAULTS: Dict[str, str] = {
    "NCCL_DEBUG": "WARN",
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",
    "NCCL_IB_TIMEOUT": "22",
    "OMP_NUM_THREADS": "4",
    "PYTHONUNBUFFERED": "1",
}
"""Environment defaults of a job; each is exported as ``${NAME:-default}`` so a value set where ``sbatch`` runs
wins. CUDA_DEVICE_MAX_CONNECTIONS=1 keeps Megatron-Core's tensor-parallel communication ordered ahead of compute;
TORCH_NCCL_AVOID_RECORD_STREAMS=1 frees NCCL buffers without stream records; NCCL_IB_TIMEOUT=22 rides out short
InfiniBand link flaps; OMP_NUM_THREADS=4 bounds CPU threads per rank."""


class LaunchError(OctoError, ValueError):
    """Launch options that cannot work together; the message is one line naming the problem and the fix."""


@dataclass
class JobSpec:
    """The command every rank runs: ``python -m megatron_octo COMMAND --recipe RECIPE --run-dir RUN_DIR ...``."""

    recipe: str
    """Recipe name or YAML path, as ``octo train`` / ``octo rl`` take it."""
    run_dir: Path
    """Absolute run directory; the same for every attempt of a requeued job, so an attempt resumes the last one."""
    command: str = "train"
    """``octo`` subcommand the ranks run: one of ``config.choices.STAGE_COMMANDS`` (``train``, ``rl``)."""
    overrides: List[str] = field(default_factory=list)
    """``key=value`` recipe overrides passed through unchanged."""
    python: str = "python"
    """Interpreter on the compute nodes (``python`` inside the container)."""


@dataclass
class SlurmConfig:
    """One ``sbatch`` job: resources, container, networking, pre-emption."""

    nodes: int
    """Nodes of the job (``--nodes``)."""
    gpus_per_node: int
    """GPUs used on each node; one rank per GPU. 0 makes a CPU job: no GPUs requested, the ranks run over gloo,
    ``ranks_per_node`` of them on each node."""
    ranks_per_node: Optional[int] = None
    """Training processes on each node; None means one per GPU. Required for a CPU job (``gpus_per_node`` 0); on
    GPUs it must equal ``gpus_per_node``."""
    time: str = "04:00:00"
    """Time limit, in any Slurm form (``MM``, ``HH:MM:SS``, ``D-HH:MM``, ...)."""
    account: Optional[str] = None
    """Slurm account to charge (``--account``); None leaves the cluster default."""
    partition: Optional[str] = None
    """Slurm partition (``--partition``); None leaves the cluster default."""
    qos: Optional[str] = None
    """Quality of service (``--qos``); None leaves the cluster default."""
    job_name: Optional[str] = None
    """Job name; None means ``octo-<recipe name>``."""
    launcher: str = "srun"
    """``srun``: Slurm starts every rank (one task per GPU; the exit status of the ranks reaches the job script).
    ``torchrun``: one task per node runs torchrun, which starts the node's ranks."""
    container: Optional[str] = None
    """Container image for pyxis/enroot (``nvcr.io#...``, a registry URI or a ``.sqsh`` file); None runs on the
    nodes' own Python environment."""
    mounts: List[str] = field(default_factory=list)
    """Extra container mounts ``SRC[:DST[:FLAGS]]``; the run directory, the submit directory, ``$OCTO_DATA`` and
    the recipe's checkpoint and tokenizer paths are mounted at their own paths already."""
    signal_lead_s: int = 300
    """Seconds before the time limit at which Slurm signals the job (SIGUSR1) so training saves and requeues.
    Slurm checks limits every 30 s, so the signal comes up to 30 s earlier than this (slurmctld's
    PERIODIC_TIMEOUT)."""
    max_requeues: int = 20
    """Attempts after which a pre-empted job stops requeueing itself."""
    cpus_per_node: Optional[int] = None
    """CPU cores requested per node, split evenly over its tasks; None leaves the cluster default. In a CPU job
    each rank's OMP_NUM_THREADS defaults to its share."""
    exclusive: bool = True
    """Ask for whole nodes (``--exclusive``, ``--mem=0``)."""
    socket_ifname: Optional[str] = None
    """Network interface for NCCL's and gloo's bootstrap sockets (NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME)."""
    env: Dict[str, str] = field(default_factory=dict)
    """Extra environment exported to every rank; overrides NCCL_DEFAULTS."""
    sbatch_args: List[str] = field(default_factory=list)
    """Further ``#SBATCH`` directives, verbatim (``--constraint=h100``, ``--reservation=x``)."""
    log_dir: Optional[Path] = None
    """Where the job script, its output and each attempt's records go; None means ``RUN_DIR/slurm``."""
    dependency: Optional[str] = None
    """Slurm dependency of the job (``afterok:JOBID``: start only once that job completed successfully, e.g. a decay
    branch after its stable stage); None starts as soon as resources allow."""

    @property
    def cpu(self) -> bool:
        """A CPU job: no GPUs, gloo between the ranks."""
        return self.gpus_per_node == 0

    @property
    def ranks(self) -> int:
        """Training processes on each node."""
        return self.ranks_per_node if self.ranks_per_node is not None else self.gpus_per_node

    def world_words(self) -> str:
        """The process count as the flags state it, for error messages."""
        if self.cpu:
            return f"--nodes {self.nodes} x --ranks-per-node {self.ranks} (CPU)"
        return f"--nodes {self.nodes} x --gpus-per-node {self.gpus_per_node}"


@dataclass
class LocalConfig:
    """One node, no scheduler: torchrun with ``nproc`` processes (or the command itself for one)."""

    nproc: int
    """Processes (GPUs) on this machine."""


_TIME_FORMS = (
    (re.compile(r"^(\d+)$"), ("m",)),
    (re.compile(r"^(\d+):(\d+)$"), ("m", "s")),
    (re.compile(r"^(\d+):(\d+):(\d+)$"), ("h", "m", "s")),
    (re.compile(r"^(\d+)-(\d+)$"), ("d", "h")),
    (re.compile(r"^(\d+)-(\d+):(\d+)$"), ("d", "h", "m")),
    (re.compile(r"^(\d+)-(\d+):(\d+):(\d+)$"), ("d", "h", "m", "s")),
)
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def time_limit_seconds(limit: str) -> int:
    """Seconds in a Slurm time limit (``30``, ``30:00``, ``4:00:00``, ``1-12``, ``1-12:30``, ``1-12:30:00``)."""
    for pattern, units in _TIME_FORMS:
        match = pattern.match(limit.strip())
        if match:
            return sum(int(v) * _UNIT_S[u] for v, u in zip(match.groups(), units))
    raise LaunchError(f"--time {limit!r} is not a Slurm time limit: use MINUTES, HH:MM:SS or DAYS-HH:MM:SS")
