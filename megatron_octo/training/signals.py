"""Pre-emption and Ctrl-C: SIGTERM / SIGUSR1 / a first SIGINT ask the run to save a checkpoint after the current
step and exit with ``REQUEUE_EXIT_CODE``; a second SIGINT stops the process at once.

Slurm sends SIGUSR1 (``--signal=USR1@120``) or SIGTERM before it kills a job; torchrun forwards SIGTERM to its
workers; Ctrl-C in a terminal sends SIGINT to every process of the job. A handler only sets a flag; the stage's
checkpoint manager checks it once a step, all ranks agree through one all-reduce (a signal may reach the ranks at
slightly different steps), then they save together and stop.
"""

from __future__ import annotations

import os
import signal
from typing import Dict

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

REQUEUE_EXIT_CODE = 75
"""Exit status of a process that stopped on one of ``SIGNALS`` after saving, before its last step (EX_TEMPFAIL:
"try again later"). Job scripts (``megatron_octo.launch``) requeue a job whose step ends with it; normal
completion stays 0. Every long-running command that honours the save-and-exit contract (``octo train``,
``octo rl``) exits with this code."""

INTERRUPTED_EXIT_CODE = 130
"""Exit status after a second Ctrl-C (128 + SIGINT, as shells report it): stopped at once, nothing saved."""


class StopRequest:
    """Installs the handlers on creation; ``agreed(device)`` is collective and True once any rank got a signal.

    ``announce``: this process prints the one-line notices of a Ctrl-C (the main rank). A second SIGINT ends the
    process at once with ``INTERRUPTED_EXIT_CODE``: the newest complete checkpoint stays the resume point.
    """

    def __init__(self, announce: bool = True) -> None:
        self.received: Dict[str, bool] = {"flag": False}
        self.signal_name = ""
        self.announce = announce
        self._interrupts = 0
        self._pid = os.getpid()  # forked helpers (data-loader workers) inherit the handlers but stay silent
        self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}

    def _say(self, text: str) -> None:
        if self.announce and os.getpid() == self._pid:  # os.write: safe inside a handler that may interrupt a print
            os.write(2, (text + "\n").encode())

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                self._say(
                    "octo: interrupted again: stopped at once without saving; the newest complete checkpoint "
                    "in the run directory is where the same command resumes"
                )
                import multiprocessing

                for child in multiprocessing.active_children():  # e.g. the checkpoint write helper: no orphans
                    child.kill()
                os._exit(INTERRUPTED_EXIT_CODE)
            self._say(
                "[octo] Ctrl-C: saving a checkpoint after this step, then exiting (Ctrl-C again stops at once "
                "without saving)"
            )
        self.received["flag"] = True
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def agreed(self, device: torch.device) -> bool:
        flag = torch.tensor([1.0 if self.received["flag"] else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
