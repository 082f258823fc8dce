"""A process pool whose every task runs under a hard deadline: a stuck worker is killed and replaced.

Why not ``concurrent.futures`` or pebble: a ProcessPoolExecutor cannot stop one running task, and pebble stops a
timed-out worker with SIGTERM, which its worker turns into a Python-level handler; a worker stuck inside C code
(sympy/GMP arithmetic, a regex) only runs that handler when the C call returns, and pebble then waits 3 s more before
SIGKILL. Verification of model answers must never hold the caller longer than its limit, so this pool kills with
SIGKILL at the deadline, answers the task with its default, and starts a replacement worker.

Two clocks per task: a *soft* alarm in the worker (``SIGALRM`` at ``soft_fraction * timeout``) ends Python-level
work cleanly and keeps the worker alive; the *hard* deadline in the parent (``timeout``, measured from the moment
the worker could start the task: its acknowledgement of the chunk, then each previous result) holds even when the
worker ignores signals.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

# Modules the forkserver imports once, so that each (re)started worker forks with sympy and math-verify loaded.
PRELOAD = ("math_verify", "megatron_octo.eval.scoring", "megatron_octo.rl.reward")
_MAX_CHUNK = 32
_MAX_STARTUP_FAILURES = 3
_STARTUP_GRACE = 10.0  # seconds a worker may spend unpickling a chunk before its first task's deadline starts


class PoolError(RuntimeError):
    """The workers cannot run the tasks at all (they die at start-up, or cannot load the task function): a bug or a
    broken environment, never a verdict on one task."""


class _SoftTimeout(BaseException):
    """Raised by the worker's alarm. A BaseException, so library code that catches ``Exception`` lets it through."""


_IN_TASK = False


def _on_alarm(signum, frame):
    if _IN_TASK:
        raise _SoftTimeout()


def _run_one(fn: Callable, args: tuple, soft_timeout: float) -> Tuple[bool, Any]:
    """fn(*args) under the soft alarm: (True, result) or (False, reason)."""
    global _IN_TASK
    _IN_TASK = True
    signal.setitimer(signal.ITIMER_REAL, soft_timeout)
    try:
        result = fn(*args)
        _IN_TASK = False
        return True, result
    except _SoftTimeout:
        return False, "timeout"
    except Exception as exc:  # a failing task is an answer (the default), not a dead worker
        return False, f"{type(exc).__name__}: {exc}"[:300]
    finally:
        _IN_TASK = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def _worker_main(conn, soft_timeout: float) -> None:
    """Worker loop: receive (fn, [(index, args), ...]) chunks, send one (index, ok, value) per task as it finishes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGALRM, _on_alarm)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # the chunk cannot be unpickled (e.g. the task function cannot be imported here)
            conn.send(("badchunk", f"{type(exc).__name__}: {exc}"[:300]))
            continue
        if msg is None:
            return
        fn, chunk = msg
        conn.send(("started", None))  # the chunk is unpickled (fn's module imported): the deadlines start now
        for index, args in chunk:
            ok, value = _run_one(fn, args, soft_timeout)
            try:
                conn.send((index, ok, value))
            except Exception as exc:  # an unpicklable result: report it rather than die
                conn.send((index, False, f"unpicklable result: {exc}"[:300]))


def _script_hint() -> str:
    """Why workers die at start when the caller is a plain script: multiprocessing's worker start re-imports
    the main module, so a script that scores at its top level recurses into starting workers inside a worker."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or getattr(main, "__spec__", None) is not None or not path:
        return ""
    return (
        f": each worker re-imports your script {path} (Python's multiprocessing does), which starts scoring "
        'again inside the worker; put the script\'s top-level code under `if __name__ == "__main__":`'
    )


class _Worker:
    """Parent-side handle: the process, its pipe, the indices it holds and when its current task started."""

    def __init__(self, ctx, soft_timeout: float):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, soft_timeout), daemon=True)
        self.process.start()
        child.close()
        self.queue: Deque[int] = deque()
        self.started = 0.0
        self.ready = False
        self.acked = False  # has the worker unpickled its chunk (importing the task's module if needed)?

    def kill(self) -> None:
        """SIGKILL: cannot be caught, blocked or delayed by whatever the worker is running."""
        if self.process.is_alive():
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
        self.process.join(5)
        self.conn.close()


def _context(method: Optional[str]):
    """The multiprocessing context: forkserver by default (workers fork from a clean single-threaded server with
    sympy preloaded; forking the caller itself is unsafe when it runs threads, as torch and vLLM do)."""
    method = method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


class DeadlinePool:
    """Runs many small tasks ``fn(*args)`` in worker processes, each under a hard deadline of ``timeout`` seconds.

    ``map`` returns results in input order; a task that fails, times out or crashes its worker yields ``default``.
    ``fn`` must be a module-level function (it is sent to the workers by reference); PoolError when the workers
    cannot load it or keep dying at start-up. Not for use from several
    threads at once (calls are serialised by a lock). Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        workers: Optional[int] = None,
        timeout: float = 2.0,
        soft_fraction: float = 0.8,
        start_method: Optional[str] = None,
    ):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.n_workers = max(1, workers or os.cpu_count() or 1)
        self.timeout = float(timeout)
        self.soft_timeout = max(0.01, soft_fraction * self.timeout)
        self._ctx = _context(start_method)
        self._workers: List[_Worker] = []
        self._lock = threading.Lock()
        self.stats: Dict[str, int] = {"tasks": 0, "timeouts": 0, "crashes": 0, "errors": 0, "restarts": 0}
        self._startup_failures = 0
        self.last_errors: Deque[str] = deque(maxlen=20)

    def __enter__(self) -> "DeadlinePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers: a polite end-of-work message, then SIGKILL for any that do not leave within a second."""
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        end = time.monotonic() + 1.0
        for w in self._workers:
            w.process.join(max(0.0, end - time.monotonic()))
            w.kill()
        self._workers = []

    def map(self, fn: Callable, args_list: Sequence[tuple], default: Any = None) -> List[Any]:
        """``[fn(*args) for args in args_list]`` computed by the workers; ``default`` where a task did not finish
        in time, raised, or killed its worker. Blocks at most about ``timeout`` x (tasks / workers) seconds."""
        with self._lock:
            try:
                return _MapRun(self, fn, list(args_list), default).run()
            except BaseException:  # an aborted run (PoolError, Ctrl-C) leaves tasks in workers: start afresh
                for w in self._workers:
                    w.kill()
                self._workers = []
                raise

    # Worker bookkeeping used by _MapRun.
    def _ensure_workers(self) -> None:
        self._workers = [w for w in self._workers if w.process.is_alive()]
        while len(self._workers) < self.n_workers:
            self._workers.append(_Worker(self._ctx, self.soft_timeout))

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.remove(worker)
        self._workers.append(_Worker(self._ctx, self.soft_timeout))
        self.stats["restarts"] += 1


class _MapRun:
    """One ``map`` call: dispatch chunks to idle ready workers, collect results, enforce deadlines."""

    def __init__(self, pool: DeadlinePool, fn: Callable, args_list: List[tuple], default: Any):
        self.pool, self.fn, self.args, self.default = pool, fn, args_list, default
        self.pending: Deque[int] = deque(range(len(args_list)))
        self.results: List[Any] = [default] * len(args_list)
        self.remaining = len(args_list)

    def run(self) -> List[Any]:
        self.pool._ensure_workers()
        while self.remaining:
            self._dispatch()
            self._wait_and_collect()
            self._enforce_deadlines()
        return self.results

    def _dispatch(self) -> None:
        n_workers = len(self.pool._workers)
        for w in self.pool._workers:
            if not w.ready or w.queue or not self.pending:
                continue
            size = max(1, min(_MAX_CHUNK, len(self.pending) // (4 * n_workers)))
            chunk = [self.pending.popleft() for _ in range(min(size, len(self.pending)))]
            try:
                w.conn.send((self.fn, [(i, self.args[i]) for i in chunk]))
            except (OSError, ValueError):  # the worker died between checks: hand the chunk back, replace it
                self.pending.extendleft(reversed(chunk))
                self.pool._replace(w)
                return
            w.queue.extend(chunk)
            w.started = time.monotonic()
            w.acked = False

    def _wait_and_collect(self) -> None:
        workers = self.pool._workers
        busy = [w for w in workers if w.queue]
        timeout = None
        if busy:
            timeout = max(0.0, min(w.started + self._limit(w) for w in busy) - time.monotonic())
        handles = [w.conn for w in workers] + [w.process.sentinel for w in workers]
        ready = set(wait(handles, timeout=timeout if timeout is not None else 1.0))
        for w in list(workers):
            if w.conn in ready:
                self._drain(w)

    def _drain(self, w: _Worker) -> None:
        """Read every message the worker has sent; a broken pipe means the worker died (handled as a crash)."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "ready":
                    w.ready = True
                    self.pool._startup_failures = 0
                    continue
                if msg[0] == "badchunk":
                    raise PoolError(f"the pool's workers cannot load the task {self.fn!r}: {msg[1]}")
                if msg[0] == "started":
                    w.started, w.acked = time.monotonic(), True
                    continue
                self._record(w, *msg)
        except (EOFError, OSError):
            self._fail_current(w, "crashes")

    def _record(self, w: _Worker, index: int, ok: bool, value: Any) -> None:
        if not w.queue or w.queue[0] != index:  # a result of a task that was already given up; ignore it
            return
        w.queue.popleft()
        w.started = time.monotonic()
        self.remaining -= 1
        self.pool.stats["tasks"] += 1
        if ok:
            self.results[index] = value
        else:
            self.pool.stats["timeouts" if value == "timeout" else "errors"] += 1
            self.pool.last_errors.append(str(value))

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for w in list(self.pool._workers):
            if w.queue and now - w.started > self._limit(w):
                self._fail_current(w, "timeouts")
            elif not w.process.is_alive():
                self._fail_current(w, "crashes")

    def _limit(self, w: _Worker) -> float:
        """A task's deadline; before the worker acknowledges its chunk, unpickling (a first import of the task's
        module) gets a grace period on top."""
        return self.pool.timeout if w.acked else self.pool.timeout + _STARTUP_GRACE

    def _fail_current(self, w: _Worker, reason: str) -> None:
        """The worker's current task gets the default; its other tasks go back to the queue; the worker is
        replaced."""
        if w not in self.pool._workers:
            return
        if not w.ready:
            self.pool._startup_failures += 1
            if self.pool._startup_failures >= _MAX_STARTUP_FAILURES:
                raise PoolError(
                    f"{_MAX_STARTUP_FAILURES} worker processes in a row died while starting "
                    f"(exit code {w.process.exitcode}){_script_hint()}"
                )
        if w.queue:  # without a task in hand (a worker that died idle) it is only replaced
            self.pool.stats[reason] += 1
            self.pool.stats["tasks"] += 1
            self.pool.last_errors.append(
                f"{reason[:-1]} after {self.pool.timeout:g} s" if reason == "timeouts" else "worker died"
            )
            w.queue.popleft()  # results[index] already holds the default
            self.remaining -= 1
            self.pending.extendleft(reversed(w.queue))
            w.queue.clear()
        self.pool._replace(w)
