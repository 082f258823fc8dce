"""Core attention for the local (non-TE) layer spec through ``torch.nn.functional.scaled_dot_product_attention``.

Megatron-Core's local ``DotProductAttention`` materializes the [b*np, sq, sk] score matrix, repeats the key-value
heads for GQA and builds the causal mask itself. PyTorch's fused SDPA does the same computation without those
copies: on CPU it is about 1.5-2.3x faster for a forward+backward pass of small Llama models, with fp32 outputs
equal to within 1e-5 (tests/models/test_sdpa_attention.py checks the equality). It runs only in the plain case
(causal self-attention, no explicit mask, no dropout, no attention sinks or windows, query and key of the same
length); everything else goes to ``DotProductAttention`` itself.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType


class SdpaDotProductAttention(DotProductAttention):
    """``DotProductAttention`` with a fused-SDPA fast path; same constructor, same inputs and outputs."""

    def _fast_path(self, query, key, attention_mask, attn_mask_type, attention_bias, packed_seq_params) -> bool:
        """Whether SDPA computes exactly what the parent would for these inputs."""
        dropout = self.attention_dropout.p if self.training else 0.0
        return (
            attention_mask is None
            and (attn_mask_type or self.attn_mask_type) == AttnMaskType.causal
            and query.shape[0] == key.shape[0]  # decode steps (sq < sk) need a bottom-right causal mask
            and attention_bias is None
            and (packed_seq_params is None or _plain_thd(packed_seq_params))
            and dropout == 0.0
            and self.softmax_offset is None
            and not self.config.apply_query_key_layer_scaling  # the parent rescales by layer number in softmax
            and self.config.window_size is None
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        """query [sq, b, np, hn], key/value [sk, b, ng, hn] -> context [sq, b, np*hn]."""
        if not self._fast_path(query, key, attention_mask, attn_mask_type, attention_bias, packed_seq_params):
            return super().forward(query, key, value, attention_mask, attn_mask_type, attention_bias, packed_seq_params)
        if packed_seq_params is not None:
            return self._thd(query, key, value, packed_seq_params.cu_seqlens_q)
        sq, b = query.shape[0], query.shape[1]
        q = query.permute(1, 2, 0, 3)  # [b, np, sq, hn]
        k = key.permute(1, 2, 0, 3)  # [b, ng, sk, hn]
        v = value.permute(1, 2, 0, 3)  # [b, ng, sk, hn]
        # enable_gqa lets each group of np/ng query heads share one key-value head without repeating it.
        context = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.softmax_scale, enable_gqa=k.shape[1] != q.shape[1]
        )  # [b, np, sq, hn]
        return context.permute(2, 0, 1, 3).reshape(sq, b, self.hidden_size_per_partition)  # [sq, b, np*hn]

    def _thd(self, query, key, value, cu_seqlens) -> torch.Tensor:
        """Packed sequences (THD, what TE's attention takes): query [t, np, hn], key/value [t, ng, hn] -> context
        [t, np*hn], each sequence of ``cu_seqlens`` attending causally to itself only (one SDPA per sequence: the
        CPU stand-in for a variable-length flash kernel)."""
        bounds = cu_seqlens.tolist()
        out = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            q = query[start:end].permute(1, 0, 2).unsqueeze(0)  # [1, np, s, hn]
            k = key[start:end].permute(1, 0, 2).unsqueeze(0)  # [1, ng, s, hn]
            v = value[start:end].permute(1, 0, 2).unsqueeze(0)
            context = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=self.softmax_scale, enable_gqa=k.shape[1] != q.shape[1]
            )  # [1, np, s, hn]
            out.append(context[0].permute(1, 0, 2).reshape(end - start, self.hidden_size_per_partition))
        return torch.cat(out)  # [t, np*hn]


def _plain_thd(packed) -> bool:
    """THD packing with the same sequences for queries and keys and no padding between them."""
    return (
        packed.qkv_format == "thd"
        and packed.cu_seqlens_q_padded is None
        and packed.cu_seqlens_kv_padded is None
        and torch.equal(packed.cu_seqlens_q, packed.cu_seqlens_kv)
    )
