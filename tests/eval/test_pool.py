"""DeadlinePool: results in order, failures as the default, and a per-task deadline that holds even when the task is
stuck in C code with signals blocked (the worker is killed and replaced)."""

from __future__ import annotations

import operator
import time

import pytest

from megatron_octo.eval.pool import DeadlinePool
from tests.eval.pool_tasks import crash, fail, sleep_in_c_ignoring_signals, sleep_python

TIMEOUT = 1.0
SLACK = 1.0  # scheduling delay allowed on a loaded two-core machine


@pytest.fixture()
def small_pool():
    # the soft alarm at half the limit leaves the worker time to answer before the hard deadline, even when loaded
    with DeadlinePool(workers=2, timeout=TIMEOUT, soft_fraction=0.5) as p:
        yield p


def test_results_come_back_in_order(small_pool):
    args = [(i, 10 * i) for i in range(100)]
    assert small_pool.map(operator.add, args) == [11 * i for i in range(100)]
    assert small_pool.stats["tasks"] == 100 and small_pool.stats["restarts"] == 0


def test_exception_gives_default_and_keeps_worker(small_pool):
    out = small_pool.map(fail, [("boom",), ("bang",)], default="DEFAULT")
    assert out == ["DEFAULT", "DEFAULT"]
    assert small_pool.stats["errors"] == 2 and small_pool.stats["restarts"] == 0
    assert any("ValueError: boom" in e for e in small_pool.last_errors)


def test_python_level_hang_ends_at_soft_alarm(small_pool):
    small_pool.map(sleep_python, [(0,)] * 4)  # both workers have imported the task module
    start = time.monotonic()
    out = small_pool.map(sleep_python, [(0.01,), (30,), (0.01,)], default="TIMEOUT")
    elapsed = time.monotonic() - start
    assert out == ["slept", "TIMEOUT", "slept"]
    assert elapsed < TIMEOUT + SLACK
    assert small_pool.stats["timeouts"] == 1 and small_pool.stats["restarts"] == 0  # the worker survived


def test_c_level_hang_with_blocked_signals_is_killed_at_the_deadline(small_pool):
    small_pool.map(sleep_python, [(0,)] * 4)  # workers started, task module imported: the timing is the task's
    start = time.monotonic()
    out = small_pool.map(sleep_in_c_ignoring_signals, [(30,)], default="TIMEOUT")
    elapsed = time.monotonic() - start
    assert out == ["TIMEOUT"]
    assert TIMEOUT - 0.05 <= elapsed < TIMEOUT + SLACK
    assert small_pool.stats["restarts"] == 1
    assert small_pool.map(operator.mul, [(6, 7)]) == [42]  # the replacement works


def test_deadline_is_per_task_not_per_batch(small_pool):
    small_pool.map(sleep_python, [(0,)] * 4)
    start = time.monotonic()
    out = small_pool.map(sleep_in_c_ignoring_signals, [(30,)] * 4, default=None)
    elapsed = time.monotonic() - start
    assert out == [None] * 4
    # two workers, four stuck tasks: two rounds of one deadline each (plus worker restarts), never 4 x 30 s
    assert elapsed < 2 * TIMEOUT + 2 * SLACK + 2.0


def test_crashed_worker_gives_default_and_is_replaced(small_pool):
    out = small_pool.map(crash, [(3,)], default="CRASH")
    assert out == ["CRASH"]
    assert small_pool.stats["crashes"] == 1 and small_pool.stats["restarts"] == 1
    assert small_pool.map(operator.sub, [(5, 2), (9, 4)]) == [3, 5]


def test_rejects_nonpositive_timeout():
    with pytest.raises(ValueError):
        DeadlinePool(timeout=0)



def test_task_function_the_workers_cannot_load_raises(small_pool):
    import sys
    import types

    from megatron_octo.eval.pool import PoolError

    module = types.ModuleType("only_in_the_parent")  # importable here (sys.modules), nowhere in a worker
    exec("def identity(x):\n    return x\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        with pytest.raises(PoolError, match="cannot load the task"):
            small_pool.map(module.identity, [(1,), (2,)])
    finally:
        del sys.modules[module.__name__]
    assert small_pool.map(operator.add, [(1, 2), (3, 4)]) == [3, 7]  # the pool is usable afterwards
