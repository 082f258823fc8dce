"""Model FLOPs by hand for Llama-3.2-1B (shapes from its config.json)."""

import pytest
import torch

from megatron_octo.config import load_recipe
from megatron_octo.training.flops import flops_per_token, matmul_params, mfu, peak_flops


def test_llama_3_2_1b_by_hand():
    model = load_recipe("octothinker-1b-stable").model
    # Per layer: q 2048x2048, k and v 2048x512 each, o 2048x2048, MLP 3 x 2048x8192.
    per_layer = 2048 * 2048 + 2 * 2048 * 512 + 2048 * 2048 + 3 * 2048 * 8192  # 60,817,408
    output = 128256 * 2048  # tied, but its matmul still runs: 262,668,288
    assert matmul_params(model) == 16 * per_layer + output == 1_235_746_816
    # 6N + 12 * L * (heads * head_dim) * s at s = 8192.
    assert flops_per_token(model, 8192) == 6 * 1_235_746_816 + 12 * 16 * 2048 * 8192


def test_mfu_needs_a_known_peak():
    model = load_recipe("tiny-cpu").model
    assert peak_flops(torch.device("cpu")) is None
    assert mfu(1000.0, model, 64, 1, None) is None
    # 1e4 tokens/s at F FLOPs/token on 2 GPUs of 1e12 FLOP/s: 1e4 * F / 2e12.
    f = flops_per_token(model, 64)
    assert mfu(1e4, model, 64, 2, 1e12) == pytest.approx(1e4 * f / 2e12)
