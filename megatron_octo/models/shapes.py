"""Shapes derived from a ModelConfig that the HF mapping, the GPT builder and the weight map all need.

ModelConfig's shape fields are Optional (a recipe fills them from ``model.preset``); ``shape(cfg)`` is the checked,
typed view that code computing with them reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from megatron_octo.config.schema import ModelConfig

_REQUIRED_SHAPE = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "vocab_size")


@dataclass(frozen=True)
class Shape:
    """The shape of a model with every field set (defaults resolved: head_dim, query_groups)."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    query_groups: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int


def require_shape(cfg: ModelConfig) -> None:
    """Raise a one-line ValueError when a shape field that a model needs is unset."""
    shape(cfg)


def _field(cfg: ModelConfig, name: str) -> int:
    value = getattr(cfg, name)
    if value is None:
        raise ValueError(f"model.{name} is not set: give model.preset or set the shape fields")
    return int(value)


def shape(cfg: ModelConfig) -> Shape:
    """The typed shape of ``cfg``; a one-line ValueError naming the first unset field."""
    fields = {name: _field(cfg, name) for name in _REQUIRED_SHAPE + ("max_position_embeddings",)}
    heads = fields["num_attention_heads"]
    return Shape(
        query_groups=cfg.num_query_groups if cfg.num_query_groups is not None else heads,
        head_dim=cfg.kv_channels if cfg.kv_channels is not None else fields["hidden_size"] // heads,
        **fields,
    )


def head_dim(cfg: ModelConfig) -> int:
    """Attention head width: ``kv_channels`` when given, else hidden_size / num_attention_heads."""
    if cfg.kv_channels is not None:
        return cfg.kv_channels
    return _field(cfg, "hidden_size") // _field(cfg, "num_attention_heads")


def query_groups(cfg: ModelConfig) -> int:
    """Key-value heads: ``num_query_groups`` when given, else one per query head (no GQA)."""
    return cfg.num_query_groups if cfg.num_query_groups is not None else _field(cfg, "num_attention_heads")


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Smallest multiple of ``divisible_by * tp`` that holds ``vocab_size`` rows (Megatron-LM's padding rule)."""
    if vocab_size <= 0 or divisible_by <= 0 or tp <= 0:
        raise ValueError(f"vocab padding needs positive sizes, got vocab={vocab_size} by={divisible_by} tp={tp}")
    multiple = divisible_by * tp
    return int(math.ceil(vocab_size / multiple) * multiple)
