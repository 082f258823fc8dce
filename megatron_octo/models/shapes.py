"""Shapes derived from a ModelConfig that the HF mapping, the GPT builder and the weight map all need."""

from __future__ import annotations

import math

from megatron_octo.config.schema import ModelConfig

_REQUIRED_SHAPE = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "vocab_size")


def require_shape(cfg: ModelConfig) -> None:
    """Raise a one-line ValueError when a shape field that a model needs is unset."""
    for name in _REQUIRED_SHAPE + ("max_position_embeddings",):
        if getattr(cfg, name) is None:
            raise ValueError(f"model.{name} is not set: give model.preset or set the shape fields")


def head_dim(cfg: ModelConfig) -> int:
    """Attention head width: ``kv_channels`` when given, else hidden_size / num_attention_heads."""
    return cfg.kv_channels if cfg.kv_channels is not None else cfg.hidden_size // cfg.num_attention_heads


def query_groups(cfg: ModelConfig) -> int:
    """Key-value heads: ``num_query_groups`` when given, else one per query head (no GQA)."""
    return cfg.num_query_groups if cfg.num_query_groups is not None else cfg.num_attention_heads


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Smallest multiple of ``divisible_by * tp`` that holds ``vocab_size`` rows (Megatron-LM's padding rule)."""
    if vocab_size <= 0 or divisible_by <= 0 or tp <= 0:
        raise ValueError(f"vocab padding needs positive sizes, got vocab={vocab_size} by={divisible_by} tp={tp}")
    multiple = divisible_by * tp
    return int(math.ceil(vocab_size / multiple) * multiple)
