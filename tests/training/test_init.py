"""Layout-invariant initialization: the distribution rules and the key-derived seeds."""

import math

import torch

from megatron_octo.training.init import full_tensor, key_seed

DRAW = dict(seed=7, std=0.02, num_layers=8, vocab_size=100, device=torch.device("cpu"))


def test_seed_depends_on_run_seed_and_key_only():
    assert key_seed(1, "a") == key_seed(1, "a")
    assert key_seed(1, "a") != key_seed(2, "a")
    assert key_seed(1, "a") != key_seed(1, "b")
    assert 0 <= key_seed(1, "a") < 2**63


def test_norms_are_ones_and_biases_zeros():
    key = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
    assert torch.equal(full_tensor(key, (16,), layer=(3,), **DRAW), torch.ones(16))
    assert torch.equal(full_tensor("decoder.final_layernorm.weight", (16,), **DRAW), torch.ones(16))
    assert torch.equal(full_tensor("decoder.layers.self_attention.linear_qkv.bias", (48,), layer=(1,), **DRAW), torch.zeros(48))


def test_same_key_same_values_other_key_other_values():
    key = "decoder.layers.mlp.linear_fc1.weight"
    a = full_tensor(key, (64, 32), layer=(0,), **DRAW)
    b = full_tensor(key, (64, 32), layer=(0,), **DRAW)
    c = full_tensor(key, (64, 32), layer=(1,), **DRAW)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_standard_deviations_follow_megatron():
    inner = full_tensor("decoder.layers.mlp.linear_fc1.weight", (512, 512), layer=(0,), **DRAW)
    residual = full_tensor("decoder.layers.mlp.linear_fc2.weight", (512, 512), layer=(0,), **DRAW)
    # 262,144 draws: the sample std is within ~0.14% of the true one; allow 1%.
    assert abs(inner.std().item() - 0.02) < 0.02 * 0.01
    # Projections back into the residual stream: std / sqrt(2 * num_layers) = 0.02 / 4 = 0.005.
    assert abs(residual.std().item() - 0.02 / math.sqrt(16)) < 0.005 * 0.01


def test_vocab_padding_rows_are_zero_and_real_rows_do_not_depend_on_padding():
    padded = full_tensor("embedding.word_embeddings.weight", (128, 8), **DRAW)
    unpadded = full_tensor("embedding.word_embeddings.weight", (100, 8), **DRAW)
    assert torch.equal(padded[100:], torch.zeros(28, 8))
    assert torch.equal(padded[:100], unpadded)
