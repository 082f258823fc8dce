"""The step loader: each step's micro-batches exactly as ``data.batches`` deals them, read ahead by worker
processes, and never a sample outside the steps asked for (past the data's end, or before a resumed step)."""

from __future__ import annotations

import os

import pytest
import torch

from megatron_octo.data.batches import microbatch_indices
from megatron_octo.data.loader import StepLoader


class LoggedSamples:
    """Sample ``i`` is ``[i] * 5``; every read appends ``i`` to a file (worker processes included). Reading an
    index at or past ``size`` is an IndexError, as for a dataset built for exactly the stage's samples."""

    def __init__(self, log_path, size: int):
        self.log_path, self.size = str(log_path), size

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.size:
            raise IndexError(f"sample {i} of {self.size}")
        with open(self.log_path, "a") as f:
            f.write(f"{i}\n")
        return torch.full((5,), i, dtype=torch.int64)

    def reads(self) -> list:
        if not os.path.exists(self.log_path):
            return []
        with open(self.log_path) as f:
            return sorted(int(line) for line in f)


GEOMETRY = dict(global_batch=8, micro_batch=2, dp=2)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("dp_rank", [0, 1])
def test_serves_the_steps_in_order_and_reads_nothing_else(tmp_path, workers, dp_rank):
    # steps 2..4 of 5 (a resume at step 2 of a 5-step stage): 40 samples in all, this rank reads half of 16..39
    data = LoggedSamples(tmp_path / "reads.log", size=5 * 8)
    loader = StepLoader(data, start=2, end=5, dp_rank=dp_rank, device=torch.device("cpu"), num_workers=workers,
                        prefetch_factor=4, **GEOMETRY)
    expected = []
    for step in range(2, 5):
        want = microbatch_indices(step, dp_rank=dp_rank, **GEOMETRY)
        got = loader.step(step)
        assert [b[:, 0].tolist() for b in got] == want  # [micro_batch, 5] each, samples in dealing order
        assert all(b.shape == (2, 5) for b in got)
        expected += [i for mb in want for i in mb]
    with pytest.raises(RuntimeError, match="serves step 5"):
        loader.step(5)  # the stage is over: no sixth step, no read past the data
    loader.close()
    assert data.reads() == sorted(expected)
    assert min(expected) >= 16 and max(expected) < 40


def test_steps_must_come_in_order(tmp_path):
    loader = StepLoader(LoggedSamples(tmp_path / "r.log", 100), start=0, end=3, dp_rank=0,
                        device=torch.device("cpu"), **GEOMETRY)
    with pytest.raises(RuntimeError, match="serves step 0 next"):
        loader.step(1)
    loader.close()


def test_a_stage_with_no_steps_left_reads_nothing(tmp_path):
    data = LoggedSamples(tmp_path / "r.log", 16)
    loader = StepLoader(data, start=2, end=2, dp_rank=0, device=torch.device("cpu"), num_workers=2, **GEOMETRY)
    loader.close()
    assert data.reads() == []
