"""The model's parameters as they leave the trainer: current on every rank, whatever the overlap settings.

With the distributed optimizer each data-parallel rank updates only its own shard of the parameters; Megatron-Core's
DDP then all-gathers the shards into every rank's full parameters. Without ``overlap_param_gather`` that gather runs
inside ``optimizer.step()``. With it, the gather is deferred to the forward pre-hooks of the *next* forward pass
(overlapped with its compute), so between a step and the next forward each rank holds the new values only for its
own 1/DP shard and the previous values everywhere else.

Training itself never notices (every forward waits for its gather), but anything that reads the parameters between
a step and the next forward does: a checkpoint save (and so every HF / NeMo export and evaluation of a run, which
read checkpoints), and the RL weight sync into the rollout engine. ``model_state`` is the one way the trainer's
weights are read for those purposes; it completes the deferred gather first, as Megatron-LM does before it saves
(``start_param_sync(force_sync=True)`` on each DDP chunk).
"""

from __future__ import annotations

from typing import Any, Sequence, cast

import torch


def unwrap(chunk: torch.nn.Module) -> Any:
    """The GPTModel (untyped Megatron-Core) inside DDP (and Float16Module): checkpoints use the names GPTModel
    declares, as Megatron-LM's do (DDP has no sharded_state_dict of its own, and the default one would prefix every
    key with ``module.``)."""
    inner = getattr(chunk, "module", None)
    while isinstance(inner, torch.nn.Module):
        chunk, inner = inner, getattr(inner, "module", None)
    return chunk


def gather_deferred(chunks: Sequence[torch.nn.Module]) -> bool:
    """Whether these DDP chunks defer their parameter all-gather to the next forward (distributed optimizer with
    ``overlap_param_gather``), i.e. whether their parameters can be stale after ``optimizer.step()``."""
    return any(getattr(chunk, "use_forward_hook", False) for chunk in chunks)


def make_params_current(chunks: Sequence[torch.nn.Module]) -> None:
    """Complete the parameter all-gather that ``overlap_param_gather`` defers, so every rank's parameters hold the
    latest update. Collective over each chunk's data-parallel group: every rank must call it at the same point.
    Waits for an all-gather already in flight; otherwise gathers now (synchronously). A no-op without the
    deferral; the next forward's pre-hooks then find nothing left to gather, so training is unchanged."""
    for chunk in chunks:
        if getattr(chunk, "use_forward_hook", False):
            cast(Any, chunk).start_param_sync(force_sync=True)  # Megatron-Core DDP (untyped): not on nn.Module


def model_state(chunks: Sequence[torch.nn.Module]) -> dict:
    """The sharded state dict of the single model chunk, with current parameters (collective: see
    ``make_params_current``). Every path that takes weights out of the trainer (checkpoint save, RL weight sync)
    reads them through here."""
    if len(chunks) != 1:
        raise NotImplementedError("virtual pipeline stages are not supported yet")
    make_params_current(chunks)
    return unwrap(chunks[0]).sharded_state_dict()
