"""Qwen2 family: presets against the Hub config.json numbers, config round trips, errors, and HF logits parity."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers

from megatron_octo.models import qwen2

# From the Hub config.json files: layers, hidden, ffn, heads, kv heads, vocab, max positions, tied.
REAL = {
    "qwen2.5-1.5b": (28, 1536, 8960, 12, 2, 151936, 131072, True),
    "qwen2.5-3b": (36, 2048, 11008, 16, 2, 151936, 32768, True),
    "qwen2.5-7b": (28, 3584, 18944, 28, 4, 152064, 131072, False),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_presets_match_the_hub(name):
    layers, hidden, ffn, heads, groups, vocab, positions, tied = REAL[name]
    cfg = qwen2.from_hf(qwen2.PRESETS[name])
    assert (cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size) == (layers, hidden, ffn)
    assert (cfg.num_attention_heads, cfg.num_query_groups, cfg.kv_channels) == (heads, groups, None)
    assert (cfg.vocab_size, cfg.max_position_embeddings, cfg.tie_word_embeddings) == (vocab, positions, tied)
    assert cfg.rotary_base == 1e6 and cfg.rope_scaling_factor is None and cfg.norm_epsilon == 1e-6
    assert cfg.add_qkv_bias is True and cfg.preset == name
    preset = qwen2.PRESETS[name]
    assert preset["use_sliding_window"] is False and preset["sliding_window"] == positions
    assert preset["max_window_layers"] == layers and preset["bos_token_id"] == preset["eos_token_id"] == 151643


def test_tiny_preset_fits_tp2_pp2_pp4():
    cfg = qwen2.from_hf(qwen2.PRESETS["tiny-qwen2"])
    assert (cfg.num_layers, cfg.num_attention_heads, cfg.num_query_groups, cfg.vocab_size) == (4, 4, 2, 256)
    assert cfg.add_qkv_bias and cfg.tie_word_embeddings
    assert "bos_token_id" not in qwen2.PRESETS["tiny-qwen2"]  # Qwen's ids lie outside a 256-token vocab


@pytest.mark.parametrize("name", sorted(qwen2.PRESETS))
def test_preset_round_trips(name):
    cfg = qwen2.from_hf(qwen2.PRESETS[name])
    assert qwen2.to_hf(cfg) == qwen2.PRESETS[name]
    assert qwen2.from_hf(qwen2.to_hf(cfg)) == cfg


@pytest.mark.parametrize("name", sorted(qwen2.PRESETS))
def test_to_hf_builds_qwen2_config_with_the_preset_fields(name):
    preset = qwen2.PRESETS[name]
    hf = transformers.Qwen2Config(**qwen2.to_hf(qwen2.from_hf(preset)))
    for key, value in preset.items():
        if key == "rope_theta":
            assert hf.rope_parameters == {"rope_theta": value, "rope_type": "default"}
        elif key == "torch_dtype":
            assert hf.dtype == getattr(torch, value)
        elif key == "sliding_window":
            assert hf.sliding_window is None  # transformers drops the window when use_sliding_window is false
        else:
            assert getattr(hf, key) == value, key
    assert hf.layer_types == ["full_attention"] * preset["num_hidden_layers"]
    saved = hf.to_dict()  # transformers-5 layout reads back to the same config
    assert qwen2.from_hf(saved) == qwen2.from_hf(preset)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"use_sliding_window": True, "sliding_window": 64}, "use_sliding_window"),
        ({"layer_types": ["sliding_attention"] * 4, "sliding_window": 64}, "sliding_attention"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling type 'yarn'"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"model_type": "llama"}, "model_type"),
    ],
)
def test_unsupported_hf_configs_raise(change, match):
    with pytest.raises(ValueError, match=match):
        qwen2.from_hf({**qwen2.PRESETS["tiny-qwen2"], **change})


def test_window_covering_every_position_is_full_attention():
    hf = {**qwen2.PRESETS["tiny-qwen2"], "use_sliding_window": True, "sliding_window": 256}
    assert qwen2.from_hf(hf).num_layers == 4


def test_to_hf_requires_qkv_bias():
    cfg = qwen2.from_hf(qwen2.PRESETS["tiny-qwen2"])
    with pytest.raises(ValueError, match="add_qkv_bias"):
        qwen2.to_hf(dataclasses.replace(cfg, add_qkv_bias=False))


# --- logits parity with transformers --------------------------------------------------------------------------------


@pytest.mark.parametrize("sdpa", [True, False])
def test_logits_match_transformers(compare_logits, sdpa):
    cfg = qwen2.from_hf(qwen2.PRESETS["tiny-qwen2"])
    result = compare_logits(qwen2.FAMILY, cfg, sdpa=sdpa)
    assert result.hf_logits.abs().max() > 1.0
    assert result.max_diff < 1e-4


def test_weights_round_trip_through_megatron_bit_for_bit(compare_logits):
    cfg = qwen2.from_hf(qwen2.PRESETS["tiny-qwen2"])
    result = compare_logits(qwen2.FAMILY, cfg)
    mcore_sd = result.mcore.state_dict()
    assert mcore_sd["decoder.layers.0.self_attention.linear_qkv.bias"].shape == (2 * (2 + 2) * 16,)
    back = qwen2.FAMILY.state_dict_to_hf(mcore_sd, cfg)
    hf_sd = result.hf.state_dict()
    assert set(hf_sd) - set(back) == {"lm_head.weight"}  # tied
    assert all(torch.equal(back[k], hf_sd[k]) for k in back)


def test_biases_matter(compare_logits):
    """Negative control: dropping the QKV biases on the Megatron side changes the logits."""
    cfg = qwen2.from_hf(qwen2.PRESETS["tiny-qwen2"])
    result = compare_logits(qwen2.FAMILY, cfg)
    with torch.no_grad():
        for layer in result.mcore.decoder.layers:
            layer.self_attention.linear_qkv.bias.zero_()
        ids = torch.arange(32).unsqueeze(0)
        diff = (result.hf(ids).logits - result.mcore(ids, torch.arange(32).unsqueeze(0), None)[..., :256]).abs()
    assert diff.max() > 1e-2
