"""Model FLOPs and utilization (MFU), by the standard formula of PaLM / Megatron-LM.

Training FLOPs per token = 6 * N + 12 * L * d_attn * s, where N counts the parameters that take part in matrix
multiplies (every linear layer, the output layer included even when tied to the embedding; not the embedding lookup
or the norms), L is the number of layers, d_attn = heads * head_dim and s the sequence length (the attention score
and value products). MFU = achieved model FLOP/s / the accelerator's dense peak.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models.shapes import shape

# Dense (non-sparse) peak TFLOP/s per GPU from the vendors' data sheets, by substring of the device name.
PEAK_TFLOPS: Dict[str, Dict[str, Optional[float]]] = {
    "H200": {"bf16": 989.0, "fp8": 1979.0},
    "H100": {"bf16": 989.0, "fp8": 1979.0},  # SXM; the PCIe card is lower (756 / 1513)
    "B200": {"bf16": 2250.0, "fp8": 4500.0},
    "A100": {"bf16": 312.0, "fp8": None},
}


def matmul_params(m: ModelConfig) -> int:
    """Parameters used in matrix multiplies (per token, forward): attention, MLP and the output layer."""
    s = shape(m)
    q = s.hidden_size * s.num_attention_heads * s.head_dim
    kv = 2 * s.hidden_size * s.query_groups * s.head_dim
    out = s.num_attention_heads * s.head_dim * s.hidden_size
    mlp = 3 * s.hidden_size * s.ffn_hidden_size  # gate, up, down
    return s.num_layers * (q + kv + out + mlp) + s.vocab_size * s.hidden_size


def flops_per_token(m: ModelConfig, seq_len: int) -> float:
    """Training (forward + backward) model FLOPs per token."""
    s = shape(m)
    return 6.0 * matmul_params(m) + 12.0 * s.num_layers * s.num_attention_heads * s.head_dim * seq_len


def peak_flops(device: torch.device, fp8: bool = False) -> Optional[float]:
    """Dense peak FLOP/s of one accelerator, or None where unknown (CPU, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            value = peaks["fp8" if fp8 else "bf16"]
            return value * 1e12 if value else None
    return None


def mfu(tokens_per_s: float, m: ModelConfig, seq_len: int, num_gpus: int, peak: Optional[float]) -> Optional[float]:
    """Model FLOPs utilization of the whole job, or None without a known peak."""
    if not peak:
        return None
    return tokens_per_s * flops_per_token(m, seq_len) / (num_gpus * peak)
