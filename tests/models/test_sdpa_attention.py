"""The fused-SDPA core attention computes what Megatron-Core's local DotProductAttention computes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType

from megatron_octo.config.schema import ModelConfig, ParallelConfig
from megatron_octo.models import gpt, preset
from megatron_octo.models.sdpa_attention import SdpaDotProductAttention


def pair(world, heads: int, groups: int, **tcfg_changes):
    cfg = dataclasses.replace(ModelConfig(**preset("tiny-llama")), num_attention_heads=heads, num_query_groups=groups)
    tcfg = dataclasses.replace(gpt.transformer_config(cfg, ParallelConfig(), torch.float32), **tcfg_changes)
    make = lambda cls: cls(tcfg, 1, AttnMaskType.causal, "self", pg_collection=world.pgs).eval()  # noqa: E731
    return make(DotProductAttention), make(SdpaDotProductAttention)


def qkv(sq: int, sk: int, heads: int, groups: int, dim: int = 16, b: int = 3):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(sq, b, heads, dim, generator=gen)  # [sq, b, np, hn]
    k = torch.randn(sk, b, groups, dim, generator=gen)  # [sk, b, ng, hn]
    v = torch.randn(sk, b, groups, dim, generator=gen)
    return q, k, v


@pytest.mark.parametrize("heads, groups", [(4, 2), (4, 4), (4, 1)])
def test_equal_to_dot_product_attention(mcore_world, heads, groups):
    local, sdpa = pair(mcore_world, heads, groups)
    q, k, v = qkv(40, 40, heads, groups)
    want = local(q, k, v, None)
    got = sdpa(q, k, v, None)
    assert got.shape == want.shape == (40, 3, heads * 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_gradients_equal(mcore_world):
    local, sdpa = pair(mcore_world, 4, 2)
    grads = []
    for module in (local, sdpa):
        q, k, v = (t.requires_grad_() for t in qkv(24, 24, 4, 2))
        module(q, k, v, None).square().sum().backward()
        grads.append([t.grad for t in (q, k, v)])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_other_cases_fall_back_to_the_parent(mcore_world):
    local, sdpa = pair(mcore_world, 4, 2)
    q, k, v = qkv(8, 8, 4, 2)
    mask = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.5  # True = masked out
    mask[..., 0] = False  # keep a key per row
    assert torch.equal(sdpa(q, k, v, mask), local(q, k, v, mask))
    assert not sdpa._fast_path(q[:1], k, None, None, None, None)  # a decode step: sq < sk
    local, sdpa = pair(mcore_world, 4, 2, attention_dropout=0.1)
    assert not sdpa.train()._fast_path(q, k, None, None, None, None)
    assert sdpa.eval()._fast_path(q, k, None, None, None, None)
