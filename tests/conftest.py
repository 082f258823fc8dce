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

import megatron_octo  # noqa: E402,F401  (first: Megatron-Core's fusions skip torch.compile on CPU, megatron_octo._jit_hook)

try:  # after the environment it reads; the reward server's venv (make test-serve) has no torch
    import torch
except ImportError:
    torch = None
if torch is not None:
    torch.set_num_threads(1)
