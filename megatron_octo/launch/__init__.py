"""Launch: one OctoThinker stage as a multi-node Slurm job (pyxis/enroot container) or on one node.

``launch_slurm`` resolves the recipe as the ranks will, checks the GPU count against its TP x PP x CP and batch,
renders the sbatch script (``launch.slurm``), and prints it (dry run) or writes it under the run's log directory
and submits it. ``launch_local`` runs torchrun on this machine. Both exit, and make their jobs exit, with
``training.signals.REQUEUE_EXIT_CODE`` when a pre-emption signal stopped the stage after a save.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from megatron_octo.launch.config import JobSpec, LaunchError, LocalConfig, SlurmConfig
from megatron_octo.launch.layout import Layout, check_layout, check_overrides
from megatron_octo.launch.local import describe_local, local_command, run_local
from megatron_octo.launch.slurm import check_slurm, render, submit, write_script


@dataclass
class SlurmLaunch:
    """What ``launch_slurm`` did."""

    script: str
    """The rendered sbatch script."""
    layout: Layout
    """The checked parallel layout."""
    path: Optional[Path] = None
    """Where the script was written (None for a dry run)."""
    job_id: Optional[str] = None
    """Slurm's job id (None for a dry run)."""


def slurm_layout(job: JobSpec, cfg: SlurmConfig) -> Layout:
    """Check the job's options, then its recipe against ``nodes`` x ``ranks`` processes (GPUs, or CPU ranks)."""
    check_overrides(job.overrides)
    check_slurm(cfg)
    return check_layout(job, cfg.nodes * cfg.ranks, cfg.world_words(), unit="ranks" if cfg.cpu else "GPUs")


def launch_slurm(
    job: JobSpec, cfg: SlurmConfig, dry_run: bool = False, overwrite: bool = False, sbatch: Optional[str] = None
) -> SlurmLaunch:
    """Check, render, and (unless ``dry_run``) write and submit the job."""
    layout = slurm_layout(job, cfg)
    text = render(job, cfg, layout)
    if dry_run:
        return SlurmLaunch(script=text, layout=layout)
    sbatch = sbatch or shutil.which("sbatch")
    if not sbatch:  # before anything is written
        raise LaunchError("sbatch is not on PATH: run on a Slurm login node, or pass --dry-run to print the script")
    path = write_script(text, job, cfg, overwrite)
    return SlurmLaunch(script=text, layout=layout, path=path, job_id=submit(path, sbatch))


def launch_local(job: JobSpec, cfg: LocalConfig, dry_run: bool = False) -> int:
    """Check the layout for ``cfg.nproc`` processes, then print the command (dry run) or run it; the exit status."""
    check_overrides(job.overrides)
    check_layout(job, cfg.nproc, f"--nproc {cfg.nproc}")
    if dry_run:
        print(describe_local(job, cfg), end="")
        return 0
    return run_local(job, cfg)


__all__ = [
    "JobSpec",
    "LaunchError",
    "Layout",
    "LocalConfig",
    "SlurmConfig",
    "SlurmLaunch",
    "check_layout",
    "launch_local",
    "launch_slurm",
    "local_command",
    "render",
    "slurm_layout",
]
