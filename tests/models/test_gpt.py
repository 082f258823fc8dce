"""Megatron-Core objects: environment probes, TransformerConfig per preset, GPTModel construction and RoPE."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from megatron_octo.config.schema import ModelConfig, ParallelConfig
from megatron_octo.models import gpt, llama, preset


def cfg_of(name: str, **changes) -> ModelConfig:
    return dataclasses.replace(ModelConfig(**preset(name)), **changes)


# --- environment ------------------------------------------------------------------------------------------------------


def test_te_available_is_false_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA machine: Transformer Engine may be installed")
    assert gpt.te_available() is False


def test_resolve_spec():
    assert gpt.resolve_spec("local") is False
    assert gpt.resolve_spec("auto") is gpt.te_available()
    if not gpt.te_available():
        with pytest.raises(ValueError, match="Transformer Engine"):
            gpt.resolve_spec("te")
    with pytest.raises(ValueError, match="auto, te or local"):
        gpt.resolve_spec("apex")


# --- TransformerConfig ------------------------------------------------------------------------------------------------


# name: (layers, hidden, ffn, heads, groups, kv_channels, eps, qkv bias) from the HF config.json files;
# kv_channels is head_dim, or hidden / heads where the file has none.
TCFG_EXPECTED = {
    "llama-3.2-1b": (16, 2048, 8192, 32, 8, 64, 1e-5, False),
    "llama-3.2-3b": (28, 3072, 8192, 24, 8, 128, 1e-5, False),
    "llama-3.1-8b": (32, 4096, 14336, 32, 8, 128, 1e-5, False),
    "qwen2.5-1.5b": (28, 1536, 8960, 12, 2, 128, 1e-6, True),
    "qwen2.5-3b": (36, 2048, 11008, 16, 2, 128, 1e-6, True),
    "qwen2.5-7b": (28, 3584, 18944, 28, 4, 128, 1e-6, True),
}


@pytest.mark.parametrize("name", sorted(TCFG_EXPECTED))
def test_transformer_config_per_preset(name):
    layers, hidden, ffn, heads, groups, kv, eps, bias = TCFG_EXPECTED[name]
    t = gpt.transformer_config(cfg_of(name), ParallelConfig(), torch.float32)
    assert (t.num_layers, t.hidden_size, t.ffn_hidden_size) == (layers, hidden, ffn)
    assert (t.num_attention_heads, t.num_query_groups, t.kv_channels) == (heads, groups, kv)
    assert t.layernorm_epsilon == eps and t.add_qkv_bias is bias and t.add_bias_linear is False
    assert t.normalization == "RMSNorm" and t.gated_linear_unit is True
    assert t.activation_func is torch.nn.functional.silu
    assert t.hidden_dropout == 0.0 and t.attention_dropout == 0.0
    assert t.rotary_interleaved is False  # HF's rotate-half layout
    assert t.calculate_per_token_loss is True and t.init_method_std == 0.02
    assert t.params_dtype == torch.float32 and not t.bf16 and not t.fp16


def test_transformer_config_parallel_and_dtype():
    t = gpt.transformer_config(
        cfg_of("tiny-llama"), ParallelConfig(tp=2, pp=2, sequence_parallel=True), torch.bfloat16
    )
    assert (t.tensor_model_parallel_size, t.pipeline_model_parallel_size, t.sequence_parallel) == (2, 2, True)
    assert t.bf16 and not t.fp16 and t.params_dtype == torch.bfloat16 and t.pipeline_dtype == torch.bfloat16
    t = gpt.transformer_config(cfg_of("tiny-qwen2"), ParallelConfig(pp=4), torch.float16)
    assert t.fp16 and t.pipeline_model_parallel_size == 4


def test_transformer_config_errors():
    with pytest.raises(ValueError, match="model.num_layers is not set"):
        gpt.transformer_config(ModelConfig(), ParallelConfig(), torch.float32)
    if not gpt.te_available():
        with pytest.raises(ValueError, match="fp8"):
            gpt.transformer_config(cfg_of("tiny-llama"), ParallelConfig(), torch.bfloat16, fp8="hybrid")


# --- model construction -----------------------------------------------------------------------------------------------


def hf_llama3_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Reference frequencies from transformers' own llama3 rope initializer."""
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config = transformers.LlamaConfig(**llama.to_hf(cfg))
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
    return inv_freq


@pytest.mark.parametrize("original", [64, 8192])
def test_rope_frequencies_follow_hf_llama3(mcore_world, original):
    cfg = cfg_of("tiny-llama", rope_original_max_position=original)
    tcfg = gpt.transformer_config(cfg, ParallelConfig(), torch.float32)
    model = gpt.build_gpt_model(cfg, tcfg, mcore_world.pgs, pre_process=True, post_process=True, use_te=False)
    torch.testing.assert_close(model.rotary_pos_emb.inv_freq, hf_llama3_inv_freq(cfg), rtol=1e-6, atol=0)


def test_tiny_preset_has_all_three_llama3_bands():
    """head_dim 16, theta 5e5, original 64: wavelengths 2*pi*theta^(i/8) fall below 16, between 16 and 64,
    and above 64 (high_freq_wavelen = 64/4, low_freq_wavelen = 64/1)."""
    cfg = cfg_of("tiny-llama")
    wavelens = [2 * math.pi * cfg.rotary_base ** (i / 8) for i in range(8)]
    assert any(w < 16 for w in wavelens) and any(16 <= w <= 64 for w in wavelens) and any(w > 64 for w in wavelens)


def test_build_gpt_model_shapes(mcore_world):
    cfg = cfg_of("tiny-llama-untied", vocab_size=250)
    tcfg = gpt.transformer_config(cfg, ParallelConfig(), torch.float32)
    model = gpt.build_gpt_model(cfg, tcfg, mcore_world.pgs, pre_process=True, post_process=True, use_te=False)
    sd = model.state_dict()
    assert sd["embedding.word_embeddings.weight"].shape == (256, 64)  # padded to 128
    assert sd["output_layer.weight"].shape == (256, 64)
    assert model.max_sequence_length == 256 and model.share_embeddings_and_output_weights is False
