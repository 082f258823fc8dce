"""Training batches ready ahead of compute: each step's micro-batches, read and stacked by worker processes while
the previous steps run, in page-locked memory on GPU hosts, copied to the device asynchronously.

A ``StepLoader`` is a torch ``DataLoader`` (as Megatron-LM's pretraining loader: ``data.num_workers`` worker
processes, pinned memory) over this data-parallel rank's micro-batches of the steps ``[start, end)`` in training
order (``data.batches``). It reads exactly those samples: nothing before a resumed run's first step, nothing past
the stage's last step (a blend dataset is built for exactly ``iters * global_batch`` samples), so prefetching
never adds a step, whatever the depth. With ``num_workers=0`` the micro-batches are read in the training process
when their step starts (no prefetching).
"""

from __future__ import annotations

from typing import Iterator, List, Sequence

import torch

from megatron_octo.data.batches import microbatch_indices


class _StepSampler:
    """This rank's micro-batch index lists of steps ``[start, end)``, in order (one list per micro-batch)."""

    def __init__(self, start: int, end: int, *, global_batch: int, micro_batch: int, dp: int, dp_rank: int):
        self.start, self.end = start, end
        self.args = dict(global_batch=global_batch, micro_batch=micro_batch, dp=dp, dp_rank=dp_rank)
        self.per_step = global_batch // (micro_batch * dp)

    def __iter__(self) -> Iterator[List[int]]:
        for step in range(self.start, self.end):
            yield from microbatch_indices(step, **self.args)

    def __len__(self) -> int:
        return max(self.end - self.start, 0) * self.per_step


class _MicroBatches(torch.utils.data.Dataset):
    """Item ``indices`` (a list of sample indices) is their samples stacked: ``[micro_batch, seq_len + 1]``."""

    def __init__(self, dataset: Sequence[torch.Tensor]):
        self.dataset = dataset

    def __getitem__(self, indices: List[int]) -> torch.Tensor:
        return torch.stack([self.dataset[i] for i in indices])


class StepLoader:
    """Each step's micro-batches on ``device``, steps asked for in order from ``start``.

    ``num_workers``: worker processes reading ahead (0: read in this process when the step starts);
    ``prefetch_factor``: micro-batches each worker keeps ready; ``pin_memory``: page-locked host buffers (CUDA
    only) so that the copies to the GPU are asynchronous.
    """

    def __init__(
        self,
        dataset: Sequence[torch.Tensor],
        *,
        start: int,
        end: int,
        global_batch: int,
        micro_batch: int,
        dp: int,
        dp_rank: int,
        device: torch.device,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        pin_memory: bool = True,
    ):
        sampler = _StepSampler(start, end, global_batch=global_batch, micro_batch=micro_batch, dp=dp, dp_rank=dp_rank)
        self.per_step, self.next_step, self.end, self.device = sampler.per_step, start, end, device
        pin = pin_memory and device.type == "cuda"
        self._loader = torch.utils.data.DataLoader(
            _MicroBatches(dataset),
            batch_size=None,
            sampler=sampler,
            num_workers=num_workers,
            prefetch_factor=prefetch_factor if num_workers else None,
            pin_memory=pin,
            pin_memory_device=str(device) if pin else "",
        )
        self._iter = iter(self._loader) if start < end else None

    def step(self, step: int) -> List[torch.Tensor]:
        """The micro-batches (``[micro_batch, seq_len + 1]`` each, on the device) of ``step``, the next one."""
        if step != self.next_step or step >= self.end:
            raise RuntimeError(
                f"the loader serves step {self.next_step} next (of steps up to {self.end}), not step {step}"
            )
        self.next_step += 1
        assert self._iter is not None  # made whenever start < end, and step < end here
        return [next(self._iter).to(self.device, non_blocking=True) for _ in range(self.per_step)]

    def close(self) -> None:
        """Stop the worker processes (also done when the loader is garbage-collected)."""
        shutdown = getattr(self._iter, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iter = None


def step_loader(dataset, recipe, ctx, start: int, end: int) -> StepLoader:
    """The ``StepLoader`` of a recipe's training data for this rank (``data.num_workers`` etc.)."""
    t, d = recipe.train, recipe.data
    return StepLoader(
        dataset,
        start=start,
        end=end,
        global_batch=t.global_batch,
        micro_batch=t.micro_batch,
        dp=ctx.dp,
        dp_rank=ctx.dp_rank,
        device=ctx.device,
        num_workers=d.num_workers,
        prefetch_factor=d.prefetch_factor,
        pin_memory=d.pin_memory,
    )
