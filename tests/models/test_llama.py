"""Llama family: presets against the Hub config.json numbers, config round trips, errors, and HF logits parity."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models import llama

# From the Hub config.json files: layers, hidden, ffn, heads, kv heads, head_dim key (None: absent),
# rope factor, tied.
REAL = {
    "llama-3.2-1b": (16, 2048, 8192, 32, 8, 64, 32.0, True),
    "llama-3.2-3b": (28, 3072, 8192, 24, 8, 128, 32.0, True),
    "llama-3.1-8b": (32, 4096, 14336, 32, 8, None, 8.0, False),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_presets_match_the_hub(name):
    layers, hidden, ffn, heads, groups, head_dim, factor, tied = REAL[name]
    cfg = llama.from_hf(llama.PRESETS[name])
    assert (cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size) == (layers, hidden, ffn)
    assert (cfg.num_attention_heads, cfg.num_query_groups, cfg.kv_channels) == (heads, groups, head_dim)
    assert cfg.rope_scaling_factor == factor and cfg.tie_word_embeddings is tied
    assert (cfg.rope_low_freq_factor, cfg.rope_high_freq_factor, cfg.rope_original_max_position) == (1.0, 4.0, 8192)
    assert (cfg.vocab_size, cfg.max_position_embeddings, cfg.rotary_base) == (128256, 131072, 500000.0)
    assert cfg.norm_epsilon == 1e-5 and cfg.add_qkv_bias is False and cfg.preset == name
    assert llama.PRESETS[name]["bos_token_id"] == 128000 and llama.PRESETS[name]["eos_token_id"] == 128001


def test_tiny_presets_fit_tp2_pp2_pp4():
    for name, tied in (("tiny-llama", True), ("tiny-llama-untied", False)):
        cfg = llama.from_hf(llama.PRESETS[name])
        assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_query_groups) == (4, 64, 4, 2)
        assert (cfg.vocab_size, cfg.max_position_embeddings, cfg.tie_word_embeddings) == (256, 256, tied)
        assert cfg.rope_scaling_factor is not None and cfg.rope_original_max_position < cfg.max_position_embeddings
        assert cfg.num_layers % 4 == 0 and cfg.num_attention_heads % 2 == 0 and cfg.num_query_groups % 2 == 0


@pytest.mark.parametrize("name", sorted(llama.PRESETS))
def test_preset_round_trips(name):
    cfg = llama.from_hf(llama.PRESETS[name])
    assert llama.to_hf(cfg) == llama.PRESETS[name]
    assert llama.from_hf(llama.to_hf(cfg)) == cfg


@pytest.mark.parametrize("name", sorted(llama.PRESETS))
def test_to_hf_builds_llama_config_with_the_preset_fields(name):
    preset = llama.PRESETS[name]
    hf = transformers.LlamaConfig(**llama.to_hf(llama.from_hf(preset)))
    for key, value in preset.items():
        if key == "rope_theta":
            assert hf.rope_parameters["rope_theta"] == value
        elif key == "rope_scaling":
            assert {k: v for k, v in hf.rope_parameters.items() if k != "rope_theta"} == value
        elif key == "torch_dtype":
            assert hf.dtype == getattr(torch, value)
        else:
            assert getattr(hf, key) == value, key
    assert transformers.AutoConfig.for_model(**llama.to_hf(llama.from_hf(preset))).model_type == "llama"


@pytest.mark.parametrize("name", ["llama-3.2-1b", "llama-3.1-8b", "tiny-llama"])
def test_from_hf_reads_transformers5_layout(name):
    """A config saved by transformers 5 carries rope_parameters instead of rope_theta / rope_scaling."""
    saved = transformers.LlamaConfig(**llama.PRESETS[name]).to_dict()
    assert "rope_scaling" not in saved or saved["rope_scaling"] == saved["rope_parameters"]
    cfg = llama.from_hf(llama.PRESETS[name])
    got = llama.from_hf(saved)
    # transformers fills head_dim (4096 / 32) when the file has none; everything else is identical.
    assert got == dataclasses.replace(cfg, kv_channels=cfg.kv_channels or 128)


def test_shape_overrides_round_trip_and_drop_stale_keys():
    cfg = dataclasses.replace(llama.from_hf(llama.PRESETS["llama-3.2-1b"]), kv_channels=None, rope_scaling_factor=None)
    hf = llama.to_hf(cfg)
    assert "head_dim" not in hf and "rope_scaling" not in hf and hf["bos_token_id"] == 128000
    assert llama.from_hf(hf, name_preset=False) == dataclasses.replace(cfg, preset=None)
    assert llama.to_hf(cfg, dtype="float32")["torch_dtype"] == "float32"


@pytest.mark.parametrize(
    "change, match",
    [
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling type 'yarn'"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling type 'linear'"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"model_type": "qwen2"}, "model_type"),
    ],
)
def test_unsupported_hf_configs_raise(change, match):
    with pytest.raises(ValueError, match=match):
        llama.from_hf({**llama.PRESETS["tiny-llama"], **change})


def test_to_hf_rejects_other_families_and_biases():
    cfg = llama.from_hf(llama.PRESETS["tiny-llama"])
    with pytest.raises(ValueError, match="add_qkv_bias"):
        llama.to_hf(dataclasses.replace(cfg, add_qkv_bias=True))
    with pytest.raises(ValueError, match="family"):
        llama.to_hf(dataclasses.replace(cfg, family="qwen2"))
    with pytest.raises(ValueError, match="not set"):
        llama.to_hf(ModelConfig())


# --- logits parity with transformers --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-untied"])
@pytest.mark.parametrize("sdpa", [True, False])
def test_logits_match_transformers(compare_logits, name, sdpa):
    cfg = llama.from_hf(llama.PRESETS[name])
    result = compare_logits(llama.FAMILY, cfg, sdpa=sdpa)
    assert result.hf_logits.abs().max() > 1.0  # random weights of unit effect: a real signal
    assert result.max_diff < 1e-4


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-untied"])
def test_weights_round_trip_through_megatron_bit_for_bit(compare_logits, name):
    cfg = llama.from_hf(llama.PRESETS[name])
    result = compare_logits(llama.FAMILY, cfg)
    back = llama.FAMILY.state_dict_to_hf(result.mcore.state_dict(), cfg)
    hf_sd = result.hf.state_dict()
    assert set(hf_sd) - set(back) == ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
    assert all(torch.equal(back[k], hf_sd[k]) for k in back)


def test_rope_scaling_parameters_reach_megatron(compare_logits):
    """Negative control: Megatron-Core's built-in Llama-3 scaling (original 8192) differs from the preset's."""
    cfg = llama.from_hf(llama.PRESETS["tiny-llama"])
    wrong = dataclasses.replace(cfg, rope_original_max_position=8192)
    assert compare_logits(llama.FAMILY, cfg, mcore_cfg=wrong).max_diff > 1e-2
