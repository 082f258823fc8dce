"""Pre-emption: SIGTERM / SIGUSR1 ask the run to save a checkpoint after the current step and exit cleanly.

Slurm sends SIGUSR1 (``--signal=USR1@120``) or SIGTERM before it kills a job; torchrun forwards SIGTERM to its
workers. A handler only sets a flag; the loop checks it once a step, all ranks agree through one all-reduce (a
signal may reach the ranks at slightly different steps), then they save together and stop.
"""

from __future__ import annotations

import signal
from typing import Dict

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

REQUEUE_EXIT_CODE = 75
"""Exit status of a process that stopped on one of ``SIGNALS`` after saving, before its last step (EX_TEMPFAIL:
"try again later"). Job scripts (``megatron_octo.launch``) requeue a job whose step ends with it; normal
completion stays 0. Every long-running command that honours the save-and-exit contract (``octo train``,
``octo rl``) exits with this code."""


class StopRequest:
    """Installs the handlers on creation; ``agreed(device)`` is collective and True once any rank got a signal."""

    def __init__(self) -> None:
        self.received: Dict[str, bool] = {"flag": False}
        self.signal_name = ""
        self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}

    def _handle(self, signum, frame) -> None:
        self.received["flag"] = True
        self.signal_name = signal.Signals(signum).name

    def agreed(self, device: torch.device) -> bool:
        flag = torch.tensor([1.0 if self.received["flag"] else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
