"""Hugging Face ``config.json`` <-> ModelConfig: the fields every Llama-like family shares, and named presets.

A family module (``llama``, ``qwen2``) adds its own constants and checks on top of these helpers.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
from typing import Callable, Dict, Iterator, Mapping, Optional, Tuple

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models.shapes import head_dim, query_groups, require_shape


class Presets(collections.abc.Mapping):
    """Named HF configs, read-only: each lookup returns a fresh deep copy.

    transformers 5 rewrites a config's ``rope_scaling`` dict in place when it builds a config object from it, so a
    shared dict handed out once would silently change every later lookup.
    """

    def __init__(self, presets: Mapping[str, dict]):
        self._presets = dict(presets)

    def __getitem__(self, name: str) -> dict:
        return copy.deepcopy(self._presets[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._presets)

    def __len__(self) -> int:
        return len(self._presets)


def _rope_source(hf: Mapping) -> Tuple[Optional[Mapping], float]:
    """The rope scaling dict and theta of a config.json, in the Hub layout (``rope_theta`` + ``rope_scaling``) or
    the transformers-5 layout (``rope_parameters`` holding both)."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params or None
    theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
    return scaling, float(theta)


def rope_from_hf(hf: Mapping) -> dict:
    """ModelConfig rope fields from a config.json; only no scaling or ``llama3`` scaling is supported."""
    scaling, theta = _rope_source(hf)
    out = {"rotary_base": theta}
    if scaling is None:
        return out
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return out
    if kind != "llama3":
        raise ValueError(f"rope_scaling type {kind!r} is not supported: use none or llama3")
    out.update(
        rope_scaling_factor=float(scaling["factor"]),
        rope_low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
        rope_high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
        rope_original_max_position=int(scaling.get("original_max_position_embeddings", 8192)),
    )
    return out


def rope_to_hf(cfg: ModelConfig) -> dict:
    """``rope_theta`` and ``rope_scaling`` in the Hub layout, which transformers 4.x and 5.x both read."""
    out: Dict[str, object] = {"rope_theta": float(cfg.rotary_base), "rope_scaling": None}
    if cfg.rope_scaling_factor is not None:
        out["rope_scaling"] = {
            "factor": float(cfg.rope_scaling_factor),
            "high_freq_factor": float(cfg.rope_high_freq_factor),
            "low_freq_factor": float(cfg.rope_low_freq_factor),
            "original_max_position_embeddings": int(cfg.rope_original_max_position),
            "rope_type": "llama3",
        }
    return out


def check_hf(hf: Mapping, field_name: str, supported: object, what: str) -> None:
    """One-line ValueError when ``hf[field_name]`` is present and differs from the one supported value."""
    if field_name in hf and hf[field_name] != supported:
        raise ValueError(f"{field_name}={hf[field_name]!r} is not supported: {what}")


def shape_from_hf(hf: Mapping) -> dict:
    """ModelConfig fields read from the architecture keys that Llama-like config.json files share."""
    check_hf(hf, "hidden_act", "silu", "only silu (SwiGLU) MLPs")
    return dict(
        num_layers=int(hf["num_hidden_layers"]),
        hidden_size=int(hf["hidden_size"]),
        ffn_hidden_size=int(hf["intermediate_size"]),
        num_attention_heads=int(hf["num_attention_heads"]),
        num_query_groups=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
        # Kept literal (None when absent) so that from_hf(to_hf(cfg)) == cfg.
        kv_channels=None if hf.get("head_dim") is None else int(hf["head_dim"]),
        vocab_size=int(hf["vocab_size"]),
        max_position_embeddings=int(hf["max_position_embeddings"]),
        norm_epsilon=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_method_std=float(hf.get("initializer_range", 0.02)),
        **rope_from_hf(hf),
    )


def shape_to_hf(cfg: ModelConfig, dtype: str) -> dict:
    """The architecture keys of a Llama-like config.json; ``head_dim`` is None (dropped) when kv_channels is unset."""
    require_shape(cfg)
    return dict(
        hidden_act="silu",
        hidden_size=cfg.hidden_size,
        head_dim=cfg.kv_channels,
        initializer_range=cfg.init_method_std,
        intermediate_size=cfg.ffn_hidden_size,
        max_position_embeddings=cfg.max_position_embeddings,
        num_attention_heads=cfg.num_attention_heads,
        num_hidden_layers=cfg.num_layers,
        num_key_value_heads=query_groups(cfg),
        rms_norm_eps=cfg.norm_epsilon,
        tie_word_embeddings=cfg.tie_word_embeddings,
        # Hub files say torch_dtype (transformers 4.x); transformers 5 reads it too and calls it dtype.
        torch_dtype=dtype,
        vocab_size=cfg.vocab_size,
        **rope_to_hf(cfg),
    )


def hf_dict(base: Mapping, fields_: Mapping) -> dict:
    """``base`` with ``fields_`` written over it; a None value removes the key. Keys come out sorted, as in the Hub."""
    out = dict(base)
    for key, value in fields_.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return dict(sorted(out.items()))


def match_preset(cfg: ModelConfig, presets: Mapping[str, Mapping], from_hf: Callable) -> Optional[str]:
    """Name of the preset whose architecture equals ``cfg`` (ignoring ``preset``; a missing head_dim equals
    hidden_size / num_attention_heads, as transformers fills it in), or None."""

    def effective(c: ModelConfig) -> ModelConfig:
        return dataclasses.replace(c, kv_channels=head_dim(c))

    for name, hf in presets.items():
        if effective(from_hf(hf, name_preset=False)) == effective(cfg):
            return name
    return None
