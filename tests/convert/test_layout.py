"""The weight plan: row maps against the families' own weight map, checkpoint shapes by hand, layout checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import build_plan, check_layout, row_blocks
from megatron_octo.models import llama, qwen2

CONFIGS = {
    "tiny-llama": (llama.FAMILY, llama.from_hf(llama.PRESETS["tiny-llama"])),
    "tiny-llama-untied": (llama.FAMILY, llama.from_hf(llama.PRESETS["tiny-llama-untied"])),
    # 8 heads over 2 groups (4 query heads a group): the interleave differs from the 2-a-group tiny presets.
    "qwen2-8h": (qwen2.FAMILY, dataclasses.replace(qwen2.from_hf(qwen2.PRESETS["tiny-qwen2"]),
                                                   num_attention_heads=8, kv_channels=8, vocab_size=300,
                                                   tie_word_embeddings=False)),
}


def random_hf_state(plan, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {t.name: torch.randn(t.shape, generator=gen) for t in plan.hf_tensors()}


def mcore_from_segments(plan, hf_sd):
    """Assemble every Megatron-Core tensor from its row map alone (zeros where no segment: padding)."""
    out = {}
    for e in plan.entries:
        t = torch.zeros(e.mcore.shape)
        for s in e.segments:
            t[s.mcore_row: s.mcore_row + s.rows] = hf_sd[s.hf_name][s.hf_row: s.hf_row + s.rows]
        name = e.mcore.key if e.mcore.layer is None else e.mcore.key.replace("layers.", f"layers.{e.mcore.layer}.")
        out[name] = t
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_row_maps_reproduce_the_family_weight_map(name):
    """The family's full-tensor transforms (merge_qkv, merge_fc1, pad_vocab) and the row maps agree exactly."""
    family, cfg = CONFIGS[name]
    plan = build_plan(cfg, tp=2)
    hf_sd = random_hf_state(plan)
    expected = family.state_dict_from_hf(hf_sd, cfg, use_te=True, tp=2)
    got = mcore_from_segments(plan, hf_sd)
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_inverse_row_maps_cover_every_hf_row_once(name):
    family, cfg = CONFIGS[name]
    plan = build_plan(cfg, tp=2)
    hf_sd = random_hf_state(plan, seed=1)
    mcore = family.state_dict_from_hf(hf_sd, cfg, use_te=True, tp=2)
    for t in plan.hf_tensors():
        rebuilt = torch.full(t.shape, float("nan"))
        for m, s in plan.hf_segments()[t.name]:
            key = m.key if m.layer is None else m.key.replace("layers.", f"layers.{m.layer}.")
            assert torch.isnan(rebuilt[s.hf_row: s.hf_row + s.rows]).all(), "row covered twice"
            rebuilt[s.hf_row: s.hf_row + s.rows] = mcore[key][s.mcore_row: s.mcore_row + s.rows]
        assert torch.equal(rebuilt, hf_sd[t.name]), t.name


def test_global_shapes_by_hand():
    # qwen2-8h: h=64, 8 heads of 8 in 2 groups: qkv rows = 2 * (4 + 2) * 8 = 96; ffn 128 -> fc1 256 rows;
    # vocab 300 padded to a multiple of 128 * tp: 512 at tp 2, 384 at tp 1.
    _, cfg = CONFIGS["qwen2-8h"]
    shapes = build_plan(cfg, tp=2).global_shapes()
    assert shapes["decoder.layers.self_attention.linear_qkv.weight"] == (4, 96, 64)
    assert shapes["decoder.layers.self_attention.linear_qkv.bias"] == (4, 96)
    assert shapes["decoder.layers.self_attention.linear_proj.weight"] == (4, 64, 64)
    assert shapes["decoder.layers.mlp.linear_fc1.weight"] == (4, 256, 64)
    assert shapes["decoder.layers.mlp.linear_fc2.weight"] == (4, 64, 128)
    assert shapes["decoder.layers.self_attention.linear_qkv.layer_norm_weight"] == (4, 64)
    assert shapes["decoder.layers.mlp.linear_fc1.layer_norm_weight"] == (4, 64)
    assert shapes["embedding.word_embeddings.weight"] == (512, 64)
    assert shapes["output_layer.weight"] == (512, 64)
    assert shapes["decoder.final_layernorm.weight"] == (64,)
    assert build_plan(cfg, tp=1).global_shapes()["output_layer.weight"] == (384, 64)
    assert len(shapes) == 10


def test_tied_models_have_no_output_layer_and_qkv_interleave_by_hand():
    _, cfg = CONFIGS["tiny-llama"]
    plan = build_plan(cfg, tp=1)
    assert "output_layer.weight" not in plan.global_shapes()
    assert "lm_head.weight" not in {t.name for t in plan.hf_tensors()}
    qkv = next(e for e in plan.entries if e.mcore.key.endswith("linear_qkv.weight") and e.mcore.layer == 1)
    # 4 heads of 16 in 2 groups: group 0 = q rows 0-31, k rows 0-15, v rows 0-15; group 1 = q 32-63, k 16-31, ...
    got = [(s.mcore_row, s.hf_name.split(".")[-2], s.hf_row, s.rows) for s in qkv.segments]
    assert got == [(0, "q_proj", 0, 32), (32, "k_proj", 0, 16), (48, "v_proj", 0, 16),
                   (64, "q_proj", 32, 32), (96, "k_proj", 16, 16), (112, "v_proj", 16, 16)]
    assert all(s.hf_name.startswith("model.layers.1.") for s in qkv.segments)


def test_extra_state_objects_per_layer():
    _, cfg = CONFIGS["tiny-llama"]
    keys = build_plan(cfg).extra_state_keys()
    assert len(keys) == 4 * 4 + 1  # 4 linear modules a layer, and the final norm (TE spec)
    assert keys[-1] == "decoder.final_layernorm._extra_state/shard_0_1"
    assert "decoder.layers.self_attention.linear_qkv._extra_state/shard_3_4" in keys
    assert "decoder.layers.mlp.linear_fc2._extra_state/shard_0_4" in keys


@pytest.mark.parametrize("tp, pp, fragment", [
    (3, 1, "--tp 3 must divide the 4 attention heads and the 2 key-value groups: use --tp 1 or 2"),
    (4, 1, "--tp 4 must divide"),
    (1, 3, "--pp 3 must divide the 4 layers"),
    (0, 1, "--tp 0 --pp 1: both must be >= 1"),
])
def test_layouts_the_model_cannot_take(tp, pp, fragment):
    _, cfg = CONFIGS["tiny-llama"]
    with pytest.raises(ConvertError) as info:
        check_layout(cfg, tp, pp)
    assert str(info.value).startswith(fragment)
    check_layout(cfg, 2, 4)  # 2 groups, 4 layers: fine


def test_row_blocks():
    assert row_blocks(10, 100, 300) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert row_blocks(3, 1000, 10) == [(0, 1), (1, 2), (2, 3)]  # at least one row a block
    assert row_blocks(4, 8, 1 << 20) == [(0, 4)]


def test_unknown_family_and_missing_shape_are_convert_errors():
    _, cfg = CONFIGS["tiny-llama"]
    with pytest.raises(ConvertError, match="unknown model family 'gpt2'"):
        build_plan(dataclasses.replace(cfg, family="gpt2"))
    with pytest.raises(ConvertError, match="model.hidden_size is not set"):
        build_plan(dataclasses.replace(cfg, hidden_size=None))
