"""Layout-invariant weight initialization.

Megatron-Core initializes each shard from a random stream whose consumption depends on the parallel layout, so
TP=2 and TP=1 start from different weights. Here every parameter is drawn whole, from a generator seeded by its
global checkpoint key (plus the layer number for stacked layers), then cut to this rank's shard with the offsets
that Megatron-Core's ``sharded_state_dict`` declares. Any TP/PP/DP layout therefore starts from the same full model.

The distributions follow Megatron-Core's defaults: normal(0, std) for embeddings and input projections,
normal(0, std / sqrt(2 * num_layers)) for the projections back into the residual stream (``linear_proj``,
``linear_fc2``), ones for norm weights, zeros for biases and for vocabulary padding rows.

Cost: each rank draws the full tensor of every parameter it holds a piece of, so peak extra memory is the largest
single full tensor; for real models the usual start is a converted Hugging Face checkpoint instead.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

_RESIDUAL_OUTPUTS = ("linear_proj.weight", "linear_fc2.weight")
_EMBEDDING_KEYS = ("embedding.word_embeddings.weight", "output_layer.weight")


def key_seed(seed: int, key: str) -> int:
    """A 63-bit seed from the run seed and a parameter's full-model name (stable across processes and runs)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _is_norm(key: str) -> bool:
    return key.endswith(("layer_norm_weight", "layernorm.weight", "norm.weight"))


def full_tensor(
    key: str,
    shape: Tuple[int, ...],
    *,
    layer: Tuple[int, ...] = (),
    seed: int,
    std: float,
    num_layers: int,
    vocab_size: int,
    device: torch.device,
) -> torch.Tensor:
    """The whole (unsharded) initial value of the parameter ``key`` (of stacked layer ``layer``, if any), in fp32."""
    if _is_norm(key):
        return torch.ones(shape, device=device)
    if key.endswith("bias"):
        return torch.zeros(shape, device=device)
    if key.endswith(_RESIDUAL_OUTPUTS):
        std = std / math.sqrt(2.0 * num_layers)
    name = key if not layer else f"{key}#{'.'.join(str(i) for i in layer)}"
    generator = torch.Generator(device=device).manual_seed(key_seed(seed, name))
    if key in _EMBEDDING_KEYS:
        # Rows past the real vocabulary are TP padding: their count depends on the layout, so draw only the
        # real rows (their values then do not depend on the padding) and leave the padding at zero.
        out = torch.zeros(shape, device=device)
        out[:vocab_size] = torch.empty((vocab_size,) + tuple(shape[1:]), device=device).normal_(
            0.0, std, generator=generator
        )
        return out
    return torch.empty(shape, device=device).normal_(0.0, std, generator=generator)


def _shard_pieces(sharded) -> Tuple[List, Optional[Callable[[List[torch.Tensor]], torch.Tensor]]]:
    """The ShardedTensors behind one entry of a sharded state dict, and how to merge them into the local tensor."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    if isinstance(sharded, ShardedTensor):
        return [sharded], lambda pieces: pieces[0]
    if isinstance(sharded, ShardedTensorFactory):
        # SwiGLU's fc1 is stored as two halves (gate, up), each sharded over TP on its own.
        built = sharded.build()
        pieces = list(built.values()) if isinstance(built, dict) else list(built)
        return pieces, sharded.merge_fn
    return [], None


def _local_value(sh, **draw) -> torch.Tensor:
    """This rank's slice of the full tensor described by one ShardedTensor."""
    prepend = sh.prepend_axis_num  # stacked layers: the leading offsets are the global layer numbers
    full = full_tensor(sh.key, tuple(sh.global_shape[prepend:]), layer=tuple(sh.global_offset[:prepend]), **draw)
    index = tuple(slice(offset, offset + size) for offset, size in zip(sh.global_offset[prepend:], sh.local_shape))
    return full[index]


def invariant_state_dict(
    model: Any, *, seed: int, std: float, num_layers: int, vocab_size: int
) -> Dict[str, torch.Tensor]:
    """Initial values of ``model``'s (a Megatron-Core module, not DDP-wrapped) parameters on this rank."""
    device = next(model.parameters()).device
    draw = dict(seed=seed, std=std, num_layers=num_layers, vocab_size=vocab_size, device=device)
    values = {}
    for name, sharded in model.sharded_state_dict().items():
        pieces, merge = _shard_pieces(sharded)
        if pieces and merge is not None:
            values[name] = merge([_local_value(sh, **draw) for sh in pieces])
    return values


@torch.no_grad()
def initialize_invariant(
    models: Iterable[torch.nn.Module], *, seed: int, std: float, num_layers: int, vocab_size: int
) -> None:
    """Overwrite every parameter of each model chunk with its layout-invariant initial value."""
    for model in models:
        values = invariant_state_dict(model, seed=seed, std=std, num_layers=num_layers, vocab_size=vocab_size)
        for name, param in model.named_parameters():
            if name not in values:
                raise RuntimeError(f"no sharded-state-dict entry for parameter {name}; cannot initialize it")
            value = values[name]
            if value.shape != param.shape:
                raise RuntimeError(f"{name}: initial value {tuple(value.shape)} != parameter {tuple(param.shape)}")
            param.copy_(value)
