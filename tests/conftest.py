"""Settings every test process shares (pytest's own and every process a test starts, which inherit the environment).

One OpenMP thread per process: the models under test are tiny (a matmul is microseconds of work), and the suite
runs several processes at a time on a 2-core CI machine (pytest, torchrun ranks, the checkpoint writer). With more
threads than free cores, each parallel region waits for descheduled threads: measured here, a [128, 64] x [64, 192]
matmul took 20-30 ms with 2 threads on a loaded 2-core machine and 0.06 ms with one. torchrun already gives its
ranks one thread; this gives the same to everything else."""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("MKL_NUM_THREADS", "1")

import megatron_octo  # noqa: F401  (first: cheaper Megatron-Core imports, megatron_octo._mcore_import)

try:  # after the environment it reads; the reward server's venv (make test-serve) has no torch
    import torch
except ImportError:
    torch = None
if torch is not None:
    torch.set_num_threads(1)


# The files that start real multi-process runs (torchrun ranks, whole stages), slowest first: wall seconds measured
# under `make test` on 2 workers (2026-12-03). make test hands whole files to its workers in collection order
# (--dist loadfile --no-loadscope-reorder): these go first, so the two workers end together on short files instead
# of one running a 7-minute file alone at the end. A file missing here runs after them, in the usual order.
HEAVY_FIRST = (
    "tests/training/test_checkpoint.py",  # 443
    "tests/training/test_layouts.py",  # 401
    "tests/training/test_params.py",  # 352
    "tests/training/test_stage.py",  # 263
    "tests/rl/test_sync.py",  # 258
    "tests/benchmarks/test_gpu_check.py",  # 187
    "tests/rl/test_tp2.py",  # 169
    "tests/training/test_perf_keys.py",  # 166
    "tests/rl/test_batching.py",  # 153
    "tests/test_demo.py",  # 130
    "tests/rl/test_grpo.py",  # 108
    "tests/training/test_fp16.py",  # 107
    "tests/launch/test_examples.py",  # 98
    "tests/convert/test_parallel.py",  # 92
    "tests/rl/test_ppo.py",  # 85
    "tests/launch/test_preemption.py",  # 66
    "tests/parallel/test_initialize.py",  # 62
    "tests/training/test_prefetch.py",  # 56
)


def pytest_collection_modifyitems(session, config, items):
    rank = {path: i for i, path in enumerate(HEAVY_FIRST)}
    root = str(config.rootpath)

    def key(item):
        path = os.path.relpath(str(item.path), root)
        return rank.get(path, len(HEAVY_FIRST))

    items.sort(key=key)  # stable: the usual order within a file and among the rest
