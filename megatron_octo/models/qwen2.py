"""Qwen2 / Qwen2.5: presets, Hugging Face config mapping and weight rules, declared as ``FAMILY``.

Qwen2 is the Llama-like decoder with biases on the query/key/value projections (and none elsewhere). Its
config.json may declare sliding-window attention; only configs where it is off are supported.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models import weight_map
from megatron_octo.models.family import Family
from megatron_octo.models.hf_config import Presets, check_hf, hf_dict, match_preset, shape_from_hf, shape_to_hf

FAMILY_NAME = "qwen2"
MODEL_TYPE = "qwen2"
ARCHITECTURE = "Qwen2ForCausalLM"
LAYER_RULES = weight_map.LAYER_RULES + (weight_map.QKV_BIAS_RULE,)
"""Per-layer weight rules: Llama's plus the fused QKV bias."""

CONSTANTS = {
    "architectures": [ARCHITECTURE],
    "model_type": MODEL_TYPE,
    "attention_dropout": 0.0,
    "use_cache": True,
    "use_sliding_window": False,
}


def _qwen(**arch) -> dict:
    """A Qwen2.5 base-model config.json (without ``transformers_version``); the window keys follow the Hub files,
    where sliding_window = max_position_embeddings and max_window_layers = num_hidden_layers."""
    d = {
        **CONSTANTS,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_window_layers": arch["num_hidden_layers"],
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": arch["max_position_embeddings"],
        "torch_dtype": "bfloat16",
        "use_mrope": False,
        **arch,
    }
    return dict(sorted(d.items()))


def _without_token_ids(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.endswith("_token_id")}


PRESETS: Mapping[str, dict] = Presets(
    {
        # Qwen/Qwen2.5-1.5B config.json
        "qwen2.5-1.5b": _qwen(
            hidden_size=1536,
            intermediate_size=8960,
            max_position_embeddings=131072,
            num_attention_heads=12,
            num_hidden_layers=28,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            vocab_size=151936,
        ),
        # Qwen/Qwen2.5-3B config.json
        "qwen2.5-3b": _qwen(
            hidden_size=2048,
            intermediate_size=11008,
            max_position_embeddings=32768,
            num_attention_heads=16,
            num_hidden_layers=36,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            vocab_size=151936,
        ),
        # Qwen/Qwen2.5-7B config.json (its embedding has 152064 rows, unlike the smaller models' 151936)
        "qwen2.5-7b": _qwen(
            hidden_size=3584,
            intermediate_size=18944,
            max_position_embeddings=131072,
            num_attention_heads=28,
            num_hidden_layers=28,
            num_key_value_heads=4,
            tie_word_embeddings=False,
            vocab_size=152064,
        ),
        # 4 layers, 4 heads, 2 KV groups: fits TP=2, PP=2 and PP=4. No token ids: Qwen's lie outside its vocab.
        "tiny-qwen2": _without_token_ids(
            _qwen(
                hidden_size=64,
                intermediate_size=128,
                max_position_embeddings=256,
                num_attention_heads=4,
                num_hidden_layers=4,
                num_key_value_heads=2,
                tie_word_embeddings=True,
                torch_dtype="float32",
                vocab_size=256,
            )
        ),
    }
)


def _check_no_sliding_window(hf: Mapping) -> None:
    """Sliding-window attention is off when not requested, or when the window covers every position."""
    window = hf.get("sliding_window")
    covers_all = window is None or window >= hf.get("max_position_embeddings", 0)
    if hf.get("use_sliding_window") and not covers_all:
        raise ValueError(f"use_sliding_window=true with sliding_window={window} is not supported: full attention only")
    if "sliding_attention" in (hf.get("layer_types") or []) and not covers_all:
        raise ValueError("layer_types with sliding_attention layers are not supported: full attention only")


def from_hf(hf_config: Mapping, *, name_preset: bool = True) -> ModelConfig:
    """ModelConfig of a Qwen2 ``config.json`` (Hub layout or transformers-5 ``rope_parameters`` layout).

    Sliding-window attention and rope scaling other than ``llama3`` raise a one-line ValueError. Fields with no
    HF counterpart keep their defaults; ``preset`` names the preset with the same architecture, if any.
    """
    check_hf(hf_config, "model_type", MODEL_TYPE, "the qwen2 family reads model_type qwen2")
    _check_no_sliding_window(hf_config)
    cfg = ModelConfig(family=FAMILY_NAME, add_qkv_bias=True, **shape_from_hf(hf_config))
    if name_preset:
        cfg = dataclasses.replace(cfg, preset=match_preset(cfg, PRESETS, from_hf))
    return cfg


def to_hf(cfg: ModelConfig, *, dtype: Optional[str] = None) -> dict:
    """Full ``config.json`` dict of ``cfg``; token ids come from ``cfg.preset``'s config.json when it has one,
    ``dtype`` (``torch_dtype``) defaults to the preset's, else bfloat16."""
    if cfg.family != FAMILY_NAME:
        raise ValueError(f"model.family={cfg.family!r} given to the qwen2 family's to_hf")
    if not cfg.add_qkv_bias:
        raise ValueError("model.add_qkv_bias=false is not supported by the qwen2 family: Qwen2 has QKV biases")
    base = PRESETS.get(cfg.preset or "", {})
    dtype = dtype or base.get("torch_dtype", "bfloat16")
    window = {"sliding_window": cfg.max_position_embeddings, "max_window_layers": cfg.num_layers}
    return hf_dict(base, {**shape_to_hf(cfg, dtype), **window, **CONSTANTS})


FAMILY = Family(
    name=FAMILY_NAME,
    model_type=MODEL_TYPE,
    architecture=ARCHITECTURE,
    presets=PRESETS,
    layer_rules=LAYER_RULES,
    from_hf=from_hf,
    to_hf=to_hf,
)
