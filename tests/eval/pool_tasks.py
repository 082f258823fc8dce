"""Task functions for the DeadlinePool tests. A module of their own, importing nothing heavy, because each worker
imports it on its first task."""

from __future__ import annotations

import ctypes
import os
import signal
import time


def sleep_python(seconds: float) -> str:
    """A Python-level wait: the worker's soft alarm interrupts it."""
    time.sleep(seconds)
    return "slept"


def sleep_in_c_ignoring_signals(seconds: int) -> str:
    """A wait inside libc with SIGALRM and SIGTERM blocked: only SIGKILL ends it early (as a hung sympy/GMP call)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})
    ctypes.CDLL(None).sleep(int(seconds))
    return "woke"


def crash(code: int) -> None:
    os._exit(code)


def fail(message: str) -> None:
    raise ValueError(message)
