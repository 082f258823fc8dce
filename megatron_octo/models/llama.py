"""Llama 3.x: presets, Hugging Face config mapping and weight rules, declared as ``FAMILY``.

Llama is the plain Llama-like decoder: RMSNorm, SwiGLU, RoPE (optionally Llama-3 scaled), GQA, no biases.
HF transformers already stores q/k in the rotate-half layout that Megatron-Core's non-interleaved RoPE uses, so
no head permutation is needed (tests/models/test_llama.py checks this on logits).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models import weight_map
from megatron_octo.models.family import Family
from megatron_octo.models.hf_config import Presets, check_hf, hf_dict, match_preset, shape_from_hf, shape_to_hf

FAMILY_NAME = "llama"
MODEL_TYPE = "llama"
ARCHITECTURE = "LlamaForCausalLM"
LAYER_RULES = weight_map.LAYER_RULES
"""Per-layer weight rules: Llama has no biases."""

# config.json keys fixed by this family (the architecture keys come from ModelConfig).
CONSTANTS = {
    "architectures": [ARCHITECTURE],
    "model_type": MODEL_TYPE,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "mlp_bias": False,
    "pretraining_tp": 1,
    "use_cache": True,
}


def _llama3(factor: float, original: int = 8192) -> dict:
    return {
        "factor": factor,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": original,
        "rope_type": "llama3",
    }


def _meta(**arch) -> dict:
    """A Meta Llama 3.x config.json (without ``transformers_version``)."""
    return dict(
        sorted(
            {
                **CONSTANTS,
                "bos_token_id": 128000,
                "eos_token_id": 128001,
                "hidden_act": "silu",
                "initializer_range": 0.02,
                "max_position_embeddings": 131072,
                "rms_norm_eps": 1e-05,
                "rope_theta": 500000.0,
                "torch_dtype": "bfloat16",
                "vocab_size": 128256,
                **arch,
            }.items()
        )
    )


def _tiny(tie: bool) -> dict:
    """4 layers, 4 heads, 2 KV groups: fits TP=2, PP=2 and PP=4. Llama-3 scaling with original 64 positions so
    that at head_dim 16 and theta 5e5 the three frequency bands (kept, smoothed, divided) are all present."""
    return dict(
        sorted(
            {
                **CONSTANTS,
                "head_dim": 16,
                "hidden_act": "silu",
                "hidden_size": 64,
                "initializer_range": 0.02,
                "intermediate_size": 128,
                "max_position_embeddings": 256,
                "num_attention_heads": 4,
                "num_hidden_layers": 4,
                "num_key_value_heads": 2,
                "rms_norm_eps": 1e-05,
                "rope_scaling": _llama3(4.0, original=64),
                "rope_theta": 500000.0,
                "tie_word_embeddings": tie,
                "torch_dtype": "float32",
                "vocab_size": 256,
            }.items()
        )
    )


PRESETS: Mapping[str, dict] = Presets(
    {
        # meta-llama/Llama-3.2-1B config.json
        "llama-3.2-1b": _meta(
            head_dim=64,
            hidden_size=2048,
            intermediate_size=8192,
            num_attention_heads=32,
            num_hidden_layers=16,
            num_key_value_heads=8,
            rope_scaling=_llama3(32.0),
            tie_word_embeddings=True,
        ),
        # meta-llama/Llama-3.2-3B config.json
        "llama-3.2-3b": _meta(
            head_dim=128,
            hidden_size=3072,
            intermediate_size=8192,
            num_attention_heads=24,
            num_hidden_layers=28,
            num_key_value_heads=8,
            rope_scaling=_llama3(32.0),
            tie_word_embeddings=True,
        ),
        # meta-llama/Llama-3.1-8B config.json (no head_dim key: 4096 / 32 = 128)
        "llama-3.1-8b": _meta(
            hidden_size=4096,
            intermediate_size=14336,
            num_attention_heads=32,
            num_hidden_layers=32,
            num_key_value_heads=8,
            rope_scaling=_llama3(8.0),
            tie_word_embeddings=False,
        ),
        "tiny-llama": _tiny(tie=True),
        "tiny-llama-untied": _tiny(tie=False),
    }
)


def from_hf(hf_config: Mapping, *, name_preset: bool = True) -> ModelConfig:
    """ModelConfig of a Llama ``config.json`` (Hub layout or transformers-5 ``rope_parameters`` layout).

    Attention or MLP biases and rope scaling other than ``llama3`` raise a one-line ValueError. Fields with no
    HF counterpart (``make_vocab_size_divisible_by``, ``spec``) keep their defaults; ``preset`` names the preset
    with the same architecture, if any (``name_preset=False`` leaves it None).
    """
    check_hf(hf_config, "model_type", MODEL_TYPE, "the llama family reads model_type llama")
    check_hf(hf_config, "attention_bias", False, "Llama has no attention biases (qwen2 has QKV biases)")
    check_hf(hf_config, "mlp_bias", False, "Llama MLPs have no biases")
    cfg = ModelConfig(family=FAMILY_NAME, add_qkv_bias=False, **shape_from_hf(hf_config))
    if name_preset:
        cfg = dataclasses.replace(cfg, preset=match_preset(cfg, PRESETS, from_hf))
    return cfg


def to_hf(cfg: ModelConfig, *, dtype: Optional[str] = None) -> dict:
    """Full ``config.json`` dict of ``cfg`` (Hub layout: ``rope_theta`` + ``rope_scaling``).

    Keys with no ModelConfig field (token ids) come from ``cfg.preset``'s config.json when it has one. ``dtype``
    (``torch_dtype``) defaults to the preset's, else bfloat16.
    """
    if cfg.family != FAMILY_NAME:
        raise ValueError(f"model.family={cfg.family!r} given to the llama family's to_hf")
    if cfg.add_qkv_bias:
        raise ValueError("model.add_qkv_bias=true is not supported by the llama family: use family qwen2")
    base = PRESETS.get(cfg.preset or "", {})
    dtype = dtype or base.get("torch_dtype", "bfloat16")
    return hf_dict(base, {**shape_to_hf(cfg, dtype), **CONSTANTS})


FAMILY = Family(
    name=FAMILY_NAME,
    model_type=MODEL_TYPE,
    architecture=ARCHITECTURE,
    presets=PRESETS,
    layer_rules=LAYER_RULES,
    from_hf=from_hf,
    to_hf=to_hf,
)
