"""The weight map: named layout transforms (by hand) and the Megatron-Core <-> HF name tables."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models import llama, preset, qwen2, weight_map


def cfg_of(name: str, **changes) -> ModelConfig:
    return dataclasses.replace(ModelConfig(**preset(name)), **changes)


# --- QKV and fc1 layout transforms ------------------------------------------------------------------------------------


def test_merge_qkv_layout_by_hand():
    # 4 query heads, 2 groups, head_dim 2: q rows 0..7, k rows 100..103, v rows 200..203.
    q = torch.arange(8.0)
    k = 100 + torch.arange(4.0)
    v = 200 + torch.arange(4.0)
    want = [0, 1, 2, 3, 100, 101, 200, 201, 4, 5, 6, 7, 102, 103, 202, 203]  # [q0 q1 k0 v0 | q2 q3 k1 v1]
    assert weight_map.merge_qkv(q, k, v, 4, 2, 2).tolist() == want
    # Weights: the same row order, columns untouched.
    qw, kw, vw = (t.unsqueeze(1).repeat(1, 3) for t in (q, k, v))
    merged = weight_map.merge_qkv(qw, kw, vw, 4, 2, 2)
    assert merged.shape == (16, 3)
    assert merged[:, 2].tolist() == want


def test_merge_qkv_one_group_and_mha():
    q, k, v = torch.arange(4.0), 10 + torch.arange(2.0), 20 + torch.arange(2.0)
    assert weight_map.merge_qkv(q, k, v, 2, 1, 2).tolist() == [0, 1, 2, 3, 10, 11, 20, 21]  # MQA: one group
    q, k, v = torch.arange(2.0), 10 + torch.arange(2.0), 20 + torch.arange(2.0)
    assert weight_map.merge_qkv(q, k, v, 2, 2, 1).tolist() == [0, 10, 20, 1, 11, 21]  # MHA: a group per head


@pytest.mark.parametrize("heads, groups, dim", [(8, 2, 4), (4, 4, 8), (6, 3, 2), (4, 1, 4)])
def test_split_qkv_inverts_merge_bit_for_bit(heads, groups, dim):
    hidden = 16
    q, k, v = torch.randn(heads * dim, hidden), torch.randn(groups * dim, hidden), torch.randn(groups * dim, hidden)
    merged = weight_map.merge_qkv(q, k, v, heads, groups, dim)
    assert merged.shape == (groups * (heads // groups + 2) * dim, hidden)
    for got, want in zip(weight_map.split_qkv(merged, heads, groups, dim), (q, k, v)):
        assert torch.equal(got, want)
    qb, kb, vb = torch.randn(heads * dim), torch.randn(groups * dim), torch.randn(groups * dim)
    merged = weight_map.merge_qkv(qb, kb, vb, heads, groups, dim)
    for got, want in zip(weight_map.split_qkv(merged, heads, groups, dim), (qb, kb, vb)):
        assert torch.equal(got, want)


def test_qkv_shape_mismatches_raise():
    q, k, v = torch.zeros(8, 4), torch.zeros(4, 4), torch.zeros(4, 4)
    with pytest.raises(ValueError, match="q shape"):
        weight_map.merge_qkv(torch.zeros(6, 4), k, v, 4, 2, 2)
    with pytest.raises(ValueError, match="k shape"):
        weight_map.merge_qkv(q, torch.zeros(4, 5), v, 4, 2, 2)
    with pytest.raises(ValueError, match="v shape"):
        weight_map.merge_qkv(q, k, torch.zeros(2, 4), 4, 2, 2)
    with pytest.raises(ValueError, match="not divisible"):
        weight_map.merge_qkv(q, k, v, 4, 3, 2)
    with pytest.raises(ValueError, match="qkv rows"):
        weight_map.split_qkv(torch.zeros(15, 4), 4, 2, 2)


def test_fc1_layout_and_round_trip():
    gate, up = torch.arange(6.0).reshape(3, 2), 100 + torch.arange(6.0).reshape(3, 2)
    fc1 = weight_map.merge_fc1(gate, up)
    assert fc1[:, 0].tolist() == [0, 2, 4, 100, 102, 104]  # gate first: Megatron computes silu(gate) * up
    g, u = weight_map.split_fc1(fc1)
    assert torch.equal(g, gate) and torch.equal(u, up)
    gate, up = torch.randn(40, 16), torch.randn(40, 16)
    assert all(torch.equal(a, b) for a, b in zip(weight_map.split_fc1(weight_map.merge_fc1(gate, up)), (gate, up)))


def test_fc1_shape_mismatches_raise():
    with pytest.raises(ValueError, match="gate shape"):
        weight_map.merge_fc1(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="odd"):
        weight_map.split_fc1(torch.zeros(5, 2))


def test_vocab_padding_round_trip():
    w = torch.randn(250, 8)
    padded = weight_map.pad_vocab(w, 256)
    assert padded.shape == (256, 8) and torch.equal(padded[:250], w) and not padded[250:].any()
    assert torch.equal(weight_map.unpad_vocab(padded, 250), w)
    with pytest.raises(ValueError):
        weight_map.pad_vocab(w, 128)


# --- weight map names -------------------------------------------------------------------------------------------------


def fake_hf_state_dict(cfg: ModelConfig, with_bias: bool):
    """Random tensors under every HF name, with shapes computed by hand from the config."""
    h, f, v = cfg.hidden_size, cfg.ffn_hidden_size, cfg.vocab_size
    d = cfg.kv_channels or cfg.hidden_size // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * d, cfg.num_query_groups * d
    sd = {"model.embed_tokens.weight": torch.randn(v, h), "model.norm.weight": torch.randn(h)}
    if not cfg.tie_word_embeddings:
        sd["lm_head.weight"] = torch.randn(v, h)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        sd.update({
            p + "input_layernorm.weight": torch.randn(h),
            p + "post_attention_layernorm.weight": torch.randn(h),
            p + "self_attn.q_proj.weight": torch.randn(q, h),
            p + "self_attn.k_proj.weight": torch.randn(kv, h),
            p + "self_attn.v_proj.weight": torch.randn(kv, h),
            p + "self_attn.o_proj.weight": torch.randn(h, q),
            p + "mlp.gate_proj.weight": torch.randn(f, h),
            p + "mlp.up_proj.weight": torch.randn(f, h),
            p + "mlp.down_proj.weight": torch.randn(h, f),
        })
        if with_bias:
            sd.update({p + "self_attn.q_proj.bias": torch.randn(q), p + "self_attn.k_proj.bias": torch.randn(kv),
                       p + "self_attn.v_proj.bias": torch.randn(kv)})
    return sd


LOCAL_LAYER_NAMES = {
    "input_layernorm.weight", "self_attention.linear_qkv.weight", "self_attention.linear_proj.weight",
    "pre_mlp_layernorm.weight", "mlp.linear_fc1.weight", "mlp.linear_fc2.weight",
}
TE_LAYER_NAMES = {
    "self_attention.linear_qkv.layer_norm_weight", "self_attention.linear_qkv.weight",
    "self_attention.linear_proj.weight", "mlp.linear_fc1.layer_norm_weight", "mlp.linear_fc1.weight",
    "mlp.linear_fc2.weight",
}


@pytest.mark.parametrize("use_te, layer_names", [(False, LOCAL_LAYER_NAMES), (True, TE_LAYER_NAMES)])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-untied", "tiny-qwen2"])
def test_state_dict_names_and_round_trip(name, use_te, layer_names):
    cfg = cfg_of(name)
    family = qwen2.FAMILY if cfg.family == "qwen2" else llama.FAMILY
    bias = cfg.add_qkv_bias
    hf_sd = fake_hf_state_dict(cfg, with_bias=bias)
    mcore_sd = family.state_dict_from_hf(hf_sd, cfg, use_te=use_te)
    per_layer = layer_names | ({"self_attention.linear_qkv.bias"} if bias else set())
    want = {f"decoder.layers.{i}.{n}" for i in range(4) for n in per_layer}
    want |= {"embedding.word_embeddings.weight", "decoder.final_layernorm.weight"}
    if not cfg.tie_word_embeddings:
        want.add("output_layer.weight")
    assert set(mcore_sd) == want
    assert mcore_sd["decoder.layers.0.self_attention.linear_qkv.weight"].shape == (2 * (2 + 2) * 16, 64)
    assert mcore_sd["decoder.layers.0.mlp.linear_fc1.weight"].shape == (256, 64)
    back = family.state_dict_to_hf(mcore_sd, cfg)
    assert set(back) == set(hf_sd)  # tied: no lm_head.weight on either side
    assert all(torch.equal(back[k], hf_sd[k]) for k in back)


def test_vocab_is_padded_for_tp_and_stripped():
    cfg = cfg_of("tiny-llama-untied", vocab_size=250)
    hf_sd = fake_hf_state_dict(cfg, with_bias=False)
    mcore_sd = llama.FAMILY.state_dict_from_hf(hf_sd, cfg, use_te=False, tp=2)
    for name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        assert mcore_sd[name].shape == (256, 64) and not mcore_sd[name][250:].any()
    back = llama.FAMILY.state_dict_to_hf(mcore_sd, cfg)
    assert torch.equal(back["model.embed_tokens.weight"], hf_sd["model.embed_tokens.weight"])
    assert torch.equal(back["lm_head.weight"], hf_sd["lm_head.weight"])


def test_tied_model_ignores_lm_head_and_mcore_copy():
    cfg = cfg_of("tiny-llama")
    hf_sd = fake_hf_state_dict(cfg, with_bias=False)
    hf_sd["lm_head.weight"] = hf_sd["model.embed_tokens.weight"]  # what HF's state_dict() shows for tied models
    mcore_sd = llama.FAMILY.state_dict_from_hf(hf_sd, cfg, use_te=False)
    assert "output_layer.weight" not in mcore_sd
    mcore_sd["output_layer.weight"] = mcore_sd["embedding.word_embeddings.weight"]  # a last stage's copy
    assert "lm_head.weight" not in llama.FAMILY.state_dict_to_hf(mcore_sd, cfg)


def test_unknown_or_missing_tensors_raise():
    cfg = cfg_of("tiny-llama")
    hf_sd = fake_hf_state_dict(cfg, with_bias=True)  # Llama has no biases
    with pytest.raises(ValueError, match="no Megatron-Core counterpart.*bias"):
        llama.FAMILY.state_dict_from_hf(hf_sd, cfg, use_te=False)
    hf_sd = fake_hf_state_dict(cfg, with_bias=False)
    del hf_sd["model.layers.3.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match="lacks model.layers.3.mlp.up_proj.weight"):
        llama.FAMILY.state_dict_from_hf(hf_sd, cfg, use_te=False)
    qwen = cfg_of("tiny-qwen2")
    mcore_sd = qwen2.FAMILY.state_dict_from_hf(fake_hf_state_dict(qwen, True), qwen, False)
    with pytest.raises(ValueError, match="no HF counterpart.*bias"):
        llama.FAMILY.state_dict_to_hf(mcore_sd, cfg)


def test_shape_mismatch_against_config_raises():
    cfg = cfg_of("tiny-llama")
    hf_sd = fake_hf_state_dict(dataclasses.replace(cfg, ffn_hidden_size=96), with_bias=False)
    with pytest.raises(ValueError, match="gate_proj.weight has shape .*96.* the config says"):
        llama.FAMILY.state_dict_from_hf(hf_sd, cfg, use_te=False)
