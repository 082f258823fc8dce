"""Which samples each data-parallel rank reads, step by step.

A step consumes ``global_batch`` consecutive samples. As in Megatron-LM's pretraining sampler, they are dealt in
rounds of ``micro_batch * dp``: in each round, DP rank ``r`` takes the ``r``-th slice of ``micro_batch`` samples.
Every sample of the step is read exactly once by exactly one rank, whatever the layout, so the step's mean loss
does not depend on the layout.
"""

from __future__ import annotations

from typing import Iterator, List, Sequence

import torch


def microbatch_indices(step: int, *, global_batch: int, micro_batch: int, dp: int, dp_rank: int) -> List[List[int]]:
    """Sample indices of each micro-batch that ``dp_rank`` runs at ``step`` (0-based)."""
    per_round = micro_batch * dp
    if global_batch % per_round:
        raise ValueError(f"global batch {global_batch} is not divisible by micro_batch*dp={per_round}")
    first = step * global_batch
    rounds = global_batch // per_round
    return [
        list(range(first + k * per_round + dp_rank * micro_batch, first + k * per_round + (dp_rank + 1) * micro_batch))
        for k in range(rounds)
    ]


def microbatches(dataset: Sequence[torch.Tensor], indices: List[List[int]]) -> Iterator[torch.Tensor]:
    """Stack the samples of each micro-batch: yields ``[micro_batch, seq_len + 1]`` token tensors."""
    for batch in indices:
        yield torch.stack([dataset[i] for i in batch])
