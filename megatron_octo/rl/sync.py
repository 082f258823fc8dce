"""Weight sync: the trainer's Megatron-Core shards -> full Hugging Face tensors on each rollout rank, in memory.

Every rank lists its pieces of the model from ``GPTModel.sharded_state_dict()`` (global key, global offsets, the
local data), the pieces of one model-parallel group are gathered on its first rank (the rollout rank of that
data-parallel replica), assembled into full Megatron-Core tensors and mapped to HF names by the family's weight
map (``models.<family>.state_dict_to_hf``: the same declarative rules as ``octo convert``, which also drops the
vocabulary padding). Nothing touches the disk.

Cost: one gather of the whole model per update over the model-parallel group, through ``gather_object`` (host
memory). That is what a CPU run and a one-node colocated run need; at 8B scale a bucketed NCCL broadcast straight
into vLLM's parameters would avoid the host round trip (not implemented).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.distributed as dist

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models import get_family
from megatron_octo.training.init import _shard_pieces
from megatron_octo.training.params import model_state

Piece = Tuple[str, Tuple[int, ...], Tuple[int, ...], torch.Tensor]
"""(per-layer Megatron-Core key, global offset, global shape, local data) of one shard."""


def _layer_key(key: str, layer: int) -> str:
    """Stacked checkpoint key + layer number -> the per-layer module name (``decoder.layers.{i}.<rest>``)."""
    prefix = "decoder.layers."
    assert key.startswith(prefix), f"stacked key {key} is not a decoder layer"
    return f"{prefix}{layer}.{key[len(prefix):]}"


def local_pieces(chunks) -> List[Piece]:
    """This rank's shards of every model tensor (host copies), keyed per layer; collective over the data-parallel
    group when the parameter all-gather is deferred (``training.params.model_state``)."""
    pieces: List[Piece] = []
    for sharded in model_state(chunks).values():  # current parameters (a deferred all-gather completed)
        shards, _ = _shard_pieces(sharded)
        for sh in shards:
            prepend = sh.prepend_axis_num
            key = _layer_key(sh.key, sh.global_offset[0]) if prepend else sh.key
            pieces.append((key, tuple(sh.global_offset[prepend:]), tuple(sh.global_shape[prepend:]),
                           sh.data.detach().to("cpu", torch.float32, copy=True)))
    return pieces


def assemble(pieces: List[Piece]) -> Dict[str, torch.Tensor]:
    """Full tensors from shards (replicated shards simply overwrite each other with equal values)."""
    full: Dict[str, torch.Tensor] = {}
    for key, offset, shape, data in pieces:
        target = full.setdefault(key, torch.zeros(shape, dtype=data.dtype))
        assert target.shape == torch.Size(shape), f"{key}: shards disagree on the global shape"
        index = tuple(slice(o, o + n) for o, n in zip(offset, data.shape))
        target[index] = data
    return full


def gather_hf_state(chunks, cfg: ModelConfig, mp_group) -> Dict[str, torch.Tensor]:
    """Collective over ``mp_group``: on its first rank, the full model as an HF state dict; elsewhere ``{}``."""
    pieces = local_pieces(chunks)
    size = dist.get_world_size(mp_group)
    if size > 1:
        leader = dist.get_global_rank(mp_group, 0)
        gathered = [None] * size if dist.get_rank(mp_group) == 0 else None
        dist.gather_object(pieces, gathered, dst=leader, group=mp_group)
        if dist.get_rank(mp_group) != 0:
            return {}
        pieces = [p for part in gathered for p in part]
    return get_family(cfg.family).state_dict_to_hf(assemble(pieces), cfg)
