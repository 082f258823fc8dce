"""Megatron-Core objects of a Llama-like ModelConfig: ``TransformerConfig``, the layer spec, ``GPTModel``.

Every family here is a Llama-like decoder (RMSNorm, SwiGLU, RoPE, GQA) on Megatron-Core's GPT layer spec; the
families differ only in their HF config mapping and weight rules (``models.family.Family``), so building does not
depend on the family. Megatron-Core is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional

import torch

from megatron_octo.config.schema import ModelConfig, ParallelConfig
from megatron_octo.models.shapes import head_dim, padded_vocab_size, query_groups, require_shape, shape


@functools.lru_cache(maxsize=None)
def te_available() -> bool:
    """Whether Transformer Engine's PyTorch layers can be imported here.

    ``import transformer_engine`` raises RuntimeError (not ImportError) on machines without CUDA libraries, so any
    exception means "not available".
    """
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:
        return False
    return True


def resolve_spec(spec: str) -> bool:
    """Map ``ModelConfig.spec`` (``auto`` / ``te`` / ``local``) to ``use_te``; one-line ValueError when impossible."""
    if spec == "local":
        return False
    if spec == "te":
        if not te_available():
            raise ValueError("model.spec=te but Transformer Engine cannot be imported here: use spec=local or auto")
        return True
    if spec == "auto":
        return te_available()
    raise ValueError(f"model.spec={spec!r} is not supported: use auto, te or local")


def transformer_config(
    model: ModelConfig,
    parallel: ParallelConfig,
    params_dtype: torch.dtype,
    *,
    fp8: Optional[str] = None,
    fp8_recipe: str = "tensorwise",
    fp8_bf16_layers: int = 0,
    use_cpu_initialization: bool = True,
    fused_kernels: Optional[bool] = None,
    extra: Optional[Mapping[str, object]] = None,
):
    """Megatron-Core ``TransformerConfig`` of a Llama-like model: RMSNorm, SwiGLU, RoPE, GQA, no linear biases
    except the optional QKV bias, no dropout, per-token loss.

    ``fused_kernels`` (bias-SwiGLU, masked softmax and RoPE fusions): None means on where CUDA and Transformer
    Engine are present. ``fp8`` (``hybrid`` / ``e4m3``) needs Transformer Engine. ``extra``: further
    ``TransformerConfig`` fields, winning over the ones above (training passes the FP8 and ``perf`` plans that
    ``training.precision`` and ``training.features`` resolved for its device).
    """
    from megatron.core.transformer import TransformerConfig

    require_shape(model)
    if fp8 is not None and not te_available():
        raise ValueError(f"fp8={fp8!r} needs Transformer Engine, which cannot be imported here: set fp8 to null")
    if fused_kernels is None:
        fused_kernels = torch.cuda.is_available() and te_available()
    fields = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=query_groups(model),
        kv_channels=head_dim(model),
        normalization="RMSNorm",
        layernorm_epsilon=model.norm_epsilon,
        gated_linear_unit=True,  # SwiGLU: linear_fc1 holds [gate; up], silu(gate) * up
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=model.add_qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=model.init_method_std,
        tensor_model_parallel_size=parallel.tp,
        pipeline_model_parallel_size=parallel.pp,
        context_parallel_size=parallel.cp,
        sequence_parallel=parallel.sequence_parallel,
        params_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        # Pipeline stages exchange activations in the compute dtype.
        pipeline_dtype=params_dtype,
        fp8=fp8,
        fp8_recipe=fp8_recipe,
        first_last_layers_bf16=bool(fp8 and fp8_bf16_layers),
        num_layers_at_start_in_bf16=fp8_bf16_layers or 1,
        num_layers_at_end_in_bf16=fp8_bf16_layers or 1,
        use_cpu_initialization=use_cpu_initialization,
        calculate_per_token_loss=True,
        bias_activation_fusion=fused_kernels,
        masked_softmax_fusion=fused_kernels,
        apply_rope_fusion=fused_kernels,
    )
    return TransformerConfig(**{**fields, **(extra or {})})


def layer_spec(use_te: bool, *, sdpa: bool = True):
    """Megatron-Core's GPT decoder layer spec: Transformer Engine layers, or local PyTorch layers with RMSNorm.

    With the local spec, ``sdpa`` swaps Megatron-Core's ``DotProductAttention`` for the subclass in
    ``sdpa_attention`` (same numbers, fused PyTorch SDPA); parameter names are unchanged either way.
    """
    from megatron.core.models.gpt import gpt_layer_specs

    if use_te:
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec()
    spec = gpt_layer_specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    if sdpa:
        from megatron_octo.models.sdpa_attention import SdpaDotProductAttention

        spec.submodules.self_attention.submodules.core_attention = SdpaDotProductAttention
    return spec


def _llama3_inv_freq(rope, cfg: ModelConfig) -> torch.Tensor:
    """Llama-3 scaled inverse frequencies with all four of the config's parameters.

    Megatron-Core 0.16's ``GPTModel`` forwards only the factor and its ``RotaryEmbedding`` fixes low=1, high=4,
    original=8192; its ``_apply_scaling`` takes all four, so the frequencies are recomputed with it here.
    """
    inv_freq = rope.inv_freq  # [dim / 2]
    dim = 2 * inv_freq.numel()
    base = 1.0 / (cfg.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=inv_freq.device) / dim))
    return rope._apply_scaling(
        base,
        factor=cfg.rope_scaling_factor,
        low_freq_factor=cfg.rope_low_freq_factor,
        high_freq_factor=cfg.rope_high_freq_factor,
        original_max_position_embeddings=cfg.rope_original_max_position,
    )


def build_gpt_model(
    model: ModelConfig,
    tcfg,
    pg_collection,
    *,
    pre_process: bool,
    post_process: bool,
    use_te: bool,
    sdpa: bool = True,
    vp_stage: Optional[int] = None,
):
    """Megatron-Core ``GPTModel`` for one pipeline stage of ``model`` (the shared layer spec, RoPE with optional
    Llama-3 scaling, tied embeddings as configured, vocabulary padded for tensor parallelism).

    ``sdpa`` picks the fused-SDPA core attention of the local spec (see ``layer_spec``); ``vp_stage`` is the
    virtual pipeline stage, if any.
    """
    from megatron.core.models.gpt import GPTModel

    require_shape(model)
    tp = tcfg.tensor_model_parallel_size
    gpt = GPTModel(
        config=tcfg,
        transformer_layer_spec=layer_spec(use_te, sdpa=sdpa),
        vocab_size=padded_vocab_size(shape(model).vocab_size, model.make_vocab_size_divisible_by, tp),
        max_sequence_length=model.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=model.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=model.rotary_base,
        rope_scaling=model.rope_scaling_factor is not None,
        rope_scaling_factor=model.rope_scaling_factor if model.rope_scaling_factor is not None else 8.0,
        pg_collection=pg_collection,
        vp_stage=vp_stage,
    )
    if model.rope_scaling_factor is not None:
        # Safe: the rotary module has not run yet, so its lru_cache holds nothing computed from the old values.
        gpt.rotary_pos_emb.inv_freq = _llama3_inv_freq(gpt.rotary_pos_emb, model)
    return gpt
