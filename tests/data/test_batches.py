"""Which samples each data-parallel rank reads: hand-worked cases, then the exactly-once property."""

from __future__ import annotations

import pytest
import torch

from megatron_octo.data.batches import microbatch_indices, microbatches


def test_global8_micro2_dp2_by_hand():
    # Rounds of micro*dp = 4 samples: rank 0 takes the first 2 of each round, rank 1 the next 2.
    kw = dict(global_batch=8, micro_batch=2, dp=2)
    assert microbatch_indices(0, dp_rank=0, **kw) == [[0, 1], [4, 5]]
    assert microbatch_indices(0, dp_rank=1, **kw) == [[2, 3], [6, 7]]
    assert microbatch_indices(1, dp_rank=0, **kw) == [[8, 9], [12, 13]]
    assert microbatch_indices(1, dp_rank=1, **kw) == [[10, 11], [14, 15]]


def test_single_rank_reads_the_step_in_order():
    assert microbatch_indices(2, global_batch=6, micro_batch=3, dp=1, dp_rank=0) == [[12, 13, 14], [15, 16, 17]]
    assert microbatch_indices(0, global_batch=4, micro_batch=1, dp=1, dp_rank=0) == [[0], [1], [2], [3]]


def test_one_microbatch_a_rank():
    # global 8 = micro 2 * dp 4: one round, rank r takes [2r, 2r+1].
    for rank in range(4):
        assert microbatch_indices(0, global_batch=8, micro_batch=2, dp=4, dp_rank=rank) == [[2 * rank, 2 * rank + 1]]


@pytest.mark.parametrize(
    "global_batch, micro_batch, dp",
    [(8, 1, 1), (8, 2, 1), (8, 2, 2), (8, 2, 4), (8, 1, 8), (12, 3, 2), (12, 2, 3), (16, 2, 4), (24, 4, 3)],
)
def test_every_sample_of_a_step_is_read_once(global_batch, micro_batch, dp):
    for step in range(3):
        seen = []
        for rank in range(dp):
            batches = microbatch_indices(step, global_batch=global_batch, micro_batch=micro_batch, dp=dp, dp_rank=rank)
            assert len(batches) == global_batch // (micro_batch * dp)
            assert all(len(b) == micro_batch for b in batches)
            seen += [i for b in batches for i in b]
        assert sorted(seen) == list(range(step * global_batch, (step + 1) * global_batch))


@pytest.mark.parametrize("global_batch, micro_batch, dp", [(8, 3, 1), (8, 2, 3), (8, 16, 1), (6, 2, 2)])
def test_non_divisible_layout_raises(global_batch, micro_batch, dp):
    with pytest.raises(ValueError, match="divisible"):
        microbatch_indices(0, global_batch=global_batch, micro_batch=micro_batch, dp=dp, dp_rank=0)


def test_microbatches_stack_the_samples():
    dataset = [torch.full((5,), i) for i in range(10)]
    out = list(microbatches(dataset, [[0, 1], [4, 5]]))
    assert len(out) == 2
    assert out[0].shape == (2, 5)
    assert out[0][:, 0].tolist() == [0, 1]
    assert out[1][:, 0].tolist() == [4, 5]
