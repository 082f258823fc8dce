"""`octo launch local`: one stage on this machine, under torchrun for several processes.

Signals follow the job script's contract: SIGTERM or SIGUSR1 sent to this launcher reach every rank as SIGUSR1
(torchrun itself ignores SIGUSR1, and would SIGKILL its workers 30 s after a SIGTERM, possibly mid-save); the
ranks save and exit, and the launcher exits with ``REQUEUE_EXIT_CODE`` so a wrapper can start it again to resume.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from typing import List

from megatron_octo.launch.config import JobSpec, LaunchError, LocalConfig
from megatron_octo.launch.layout import rank_command
from megatron_octo.training.signals import INTERRUPTED_EXIT_CODE, REQUEUE_EXIT_CODE, SIGNALS
from megatron_octo.utils.io import check_writable_dir


def local_command(job: JobSpec, cfg: LocalConfig) -> List[str]:
    """The command line: the rank command itself for one process, else torchrun ``--standalone``."""
    if cfg.nproc < 1:
        raise LaunchError(f"--nproc {cfg.nproc} must be >= 1")
    argv = rank_command(job)
    if cfg.nproc == 1:
        return argv
    return [argv[0], "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={cfg.nproc}", *argv[1:]]


def _ignore_usr1() -> None:  # runs in the child before exec: torchrun must not die of SIGUSR1
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def run_local(job: JobSpec, cfg: LocalConfig) -> int:
    """Run the stage; returns its exit status (``REQUEUE_EXIT_CODE`` when a forwarded signal stopped it)."""
    check_writable_dir(job.run_dir, "--run-dir")
    job.run_dir.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(
        local_command(job, cfg), start_new_session=True, preexec_fn=_ignore_usr1, env=dict(os.environ)
    )
    forwarded = {"signal": False, "interrupts": 0}

    def forward(signum, frame) -> None:
        forwarded["signal"] = True
        forwarded["interrupts"] += signum == signal.SIGINT
        # a second Ctrl-C stops at once, as it does for a stage run directly; any other signal asks for a save
        stop_now = forwarded["interrupts"] > 1
        try:
            os.killpg(child.pid, signal.SIGKILL if stop_now else signal.SIGUSR1)
        except ProcessLookupError:
            pass
        if stop_now:
            os.write(
                2,
                b"octo: interrupted again: stopped at once without saving; the newest complete checkpoint "
                b"is where the same command resumes\n",
            )

    previous = {sig: signal.signal(sig, forward) for sig in SIGNALS}
    try:
        rc = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if forwarded["interrupts"] > 1:
        return INTERRUPTED_EXIT_CODE
    if rc != 0 and forwarded["signal"]:
        return REQUEUE_EXIT_CODE  # torchrun reports a worker's REQUEUE_EXIT_CODE as 1
    return rc if rc >= 0 else 128 - rc


def describe_local(job: JobSpec, cfg: LocalConfig) -> str:
    """The command as a shell line (what --dry-run prints)."""
    return " ".join(shlex.quote(a) for a in local_command(job, cfg)) + "\n"
