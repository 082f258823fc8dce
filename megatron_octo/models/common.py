"""Machinery shared by the model families: HF config fields, Megatron-Core config and model, and the weight map.

A family module (``llama``, ``qwen2``) is declarative: its presets, the ``config.json`` constants of its
architecture, and which weight rules it uses. Everything that turns those into Megatron-Core objects or moves
tensors between the Hugging Face and Megatron-Core layouts lives here.

Weight-map functions work on *full* (unsharded, single pipeline stage) tensors; splitting them over tensor- and
pipeline-parallel ranks is the converter's job.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from megatron_octo.config.schema import ModelConfig, ParallelConfig

# --------------------------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------------------------


class Presets(collections.abc.Mapping):
    """Named HF configs, read-only: each lookup returns a fresh deep copy.

    transformers 5 rewrites a config's ``rope_scaling`` dict in place when it builds a config object from it, so a
    shared dict handed out once would silently change every later lookup.
    """

    def __init__(self, presets: Mapping[str, dict]):
        self._presets = dict(presets)

    def __getitem__(self, name: str) -> dict:
        return copy.deepcopy(self._presets[name])

    def __iter__(self):
        return iter(self._presets)

    def __len__(self) -> int:
        return len(self._presets)


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


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Smallest multiple of ``divisible_by * tp`` that holds ``vocab_size`` rows (Megatron-LM's padding rule)."""
    if vocab_size <= 0 or divisible_by <= 0 or tp <= 0:
        raise ValueError(f"vocab padding needs positive sizes, got vocab={vocab_size} by={divisible_by} tp={tp}")
    multiple = divisible_by * tp
    return int(math.ceil(vocab_size / multiple) * multiple)


# --------------------------------------------------------------------------------------------------------------------
# Hugging Face config.json <-> ModelConfig (fields every Llama-like family shares)
# --------------------------------------------------------------------------------------------------------------------

_REQUIRED_SHAPE = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "vocab_size")


def require_shape(cfg: ModelConfig) -> None:
    """Raise a one-line ValueError when a shape field that a model needs is unset."""
    for name in _REQUIRED_SHAPE + ("max_position_embeddings",):
        if getattr(cfg, name) is None:
            raise ValueError(f"model.{name} is not set: give model.preset or set the shape fields")


def head_dim(cfg: ModelConfig) -> int:
    """Attention head width: ``kv_channels`` when given, else hidden_size / num_attention_heads."""
    return cfg.kv_channels if cfg.kv_channels is not None else cfg.hidden_size // cfg.num_attention_heads


def query_groups(cfg: ModelConfig) -> int:
    """Key-value heads: ``num_query_groups`` when given, else one per query head (no GQA)."""
    return cfg.num_query_groups if cfg.num_query_groups is not None else cfg.num_attention_heads


def _rope_source(hf: Mapping) -> Tuple[Optional[Mapping], float]:
    """The rope scaling dict and theta of a config.json, in the Hub layout (``rope_theta`` + ``rope_scaling``) or
    the transformers-5 layout (``rope_parameters`` holding both)."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params or None
    theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
    return scaling, float(theta)


def rope_from_hf(hf: Mapping) -> dict:
    """ModelConfig rope fields from a config.json; only no scaling or ``llama3`` scaling is supported."""
    scaling, theta = _rope_source(hf)
    out = {"rotary_base": theta}
    if scaling is None:
        return out
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return out
    if kind != "llama3":
        raise ValueError(f"rope_scaling type {kind!r} is not supported: use none or llama3")
    out.update(
        rope_scaling_factor=float(scaling["factor"]),
        rope_low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
        rope_high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
        rope_original_max_position=int(scaling.get("original_max_position_embeddings", 8192)),
    )
    return out


def rope_to_hf(cfg: ModelConfig) -> dict:
    """``rope_theta`` and ``rope_scaling`` in the Hub layout, which transformers 4.x and 5.x both read."""
    out = {"rope_theta": float(cfg.rotary_base), "rope_scaling": None}
    if cfg.rope_scaling_factor is not None:
        out["rope_scaling"] = {
            "factor": float(cfg.rope_scaling_factor),
            "high_freq_factor": float(cfg.rope_high_freq_factor),
            "low_freq_factor": float(cfg.rope_low_freq_factor),
            "original_max_position_embeddings": int(cfg.rope_original_max_position),
            "rope_type": "llama3",
        }
    return out


def check_hf(hf: Mapping, field_name: str, supported: object, what: str) -> None:
    """One-line ValueError when ``hf[field_name]`` is present and differs from the one supported value."""
    if field_name in hf and hf[field_name] != supported:
        raise ValueError(f"{field_name}={hf[field_name]!r} is not supported: {what}")


def shape_from_hf(hf: Mapping) -> dict:
    """ModelConfig fields read from the architecture keys that Llama-like config.json files share."""
    check_hf(hf, "hidden_act", "silu", "only silu (SwiGLU) MLPs")
    return dict(
        num_layers=int(hf["num_hidden_layers"]),
        hidden_size=int(hf["hidden_size"]),
        ffn_hidden_size=int(hf["intermediate_size"]),
        num_attention_heads=int(hf["num_attention_heads"]),
        num_query_groups=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
        # Kept literal (None when absent) so that from_hf(to_hf(cfg)) == cfg.
        kv_channels=None if hf.get("head_dim") is None else int(hf["head_dim"]),
        vocab_size=int(hf["vocab_size"]),
        max_position_embeddings=int(hf["max_position_embeddings"]),
        norm_epsilon=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_method_std=float(hf.get("initializer_range", 0.02)),
        **rope_from_hf(hf),
    )


def shape_to_hf(cfg: ModelConfig, dtype: str) -> dict:
    """The architecture keys of a Llama-like config.json; ``head_dim`` is None (dropped) when kv_channels is unset."""
    require_shape(cfg)
    return dict(
        hidden_act="silu",
        hidden_size=cfg.hidden_size,
        head_dim=cfg.kv_channels,
        initializer_range=cfg.init_method_std,
        intermediate_size=cfg.ffn_hidden_size,
        max_position_embeddings=cfg.max_position_embeddings,
        num_attention_heads=cfg.num_attention_heads,
        num_hidden_layers=cfg.num_layers,
        num_key_value_heads=query_groups(cfg),
        rms_norm_eps=cfg.norm_epsilon,
        tie_word_embeddings=cfg.tie_word_embeddings,
        # Hub files say torch_dtype (transformers 4.x); transformers 5 reads it too and calls it dtype.
        torch_dtype=dtype,
        vocab_size=cfg.vocab_size,
        **rope_to_hf(cfg),
    )


def hf_dict(base: Mapping, fields_: Mapping) -> dict:
    """``base`` with ``fields_`` written over it; a None value removes the key. Keys come out sorted, as in the Hub."""
    out = dict(base)
    for key, value in fields_.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return dict(sorted(out.items()))


def match_preset(cfg: ModelConfig, presets: Mapping[str, Mapping], from_hf: Callable) -> Optional[str]:
    """Name of the preset whose architecture equals ``cfg`` (ignoring ``preset``; a missing head_dim equals
    hidden_size / num_attention_heads, as transformers fills it in), or None."""

    def effective(c: ModelConfig) -> ModelConfig:
        return dataclasses.replace(c, kv_channels=head_dim(c))

    for name, hf in presets.items():
        if effective(from_hf(hf, name_preset=False)) == effective(cfg):
            return name
    return None


# --------------------------------------------------------------------------------------------------------------------
# Megatron-Core config, layer spec, model
# --------------------------------------------------------------------------------------------------------------------


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
):
    """Megatron-Core ``TransformerConfig`` of a Llama-like model: RMSNorm, SwiGLU, RoPE, GQA, no linear biases
    except the optional QKV bias, no dropout, per-token loss.

    ``fused_kernels`` (bias-SwiGLU, masked softmax and RoPE fusions): None means on where CUDA and Transformer
    Engine are present. ``fp8`` (``hybrid`` / ``e4m3``) needs Transformer Engine.
    """
    from megatron.core.transformer import TransformerConfig

    require_shape(model)
    if fp8 is not None and not te_available():
        raise ValueError(f"fp8={fp8!r} needs Transformer Engine, which cannot be imported here: set fp8 to null")
    if fused_kernels is None:
        fused_kernels = torch.cuda.is_available() and te_available()
    return TransformerConfig(
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
    """Megatron-Core ``GPTModel`` for one pipeline stage of ``model`` (its family's layer spec, RoPE with optional
    Llama-3 scaling, tied embeddings as configured, vocabulary padded for tensor parallelism).

    ``sdpa`` picks the fused-SDPA core attention of the local spec (see ``layer_spec``); ``vp_stage`` is the
    virtual pipeline stage, if any.
    """
    from megatron.core.models.gpt import GPTModel

    from megatron_octo.models import get_family  # the registry imports this module

    require_shape(model)
    tp = tcfg.tensor_model_parallel_size
    gpt = GPTModel(
        config=tcfg,
        transformer_layer_spec=get_family(model.family).layer_spec(model, use_te, sdpa=sdpa),
        vocab_size=padded_vocab_size(model.vocab_size, model.make_vocab_size_divisible_by, tp),
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


# --------------------------------------------------------------------------------------------------------------------
# Pure tensor transforms between the HF and Megatron-Core layouts (full tensors)
# --------------------------------------------------------------------------------------------------------------------


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def merge_qkv(q, k, v, num_heads: int, num_query_groups: int, head_dim: int) -> torch.Tensor:
    """HF q/k/v projections -> Megatron's fused ``linear_qkv``, interleaved per key-value group.

    Weights: q [nh*d, h], k and v [ng*d, h] -> [ng * (nh/ng + 2) * d, h], each group laid out as its nh/ng query
    heads, then its key head, then its value head. Biases: the same with no trailing dimension.
    """
    _check(num_heads % num_query_groups == 0, f"heads {num_heads} not divisible by groups {num_query_groups}")
    hpg = num_heads // num_query_groups
    rest = tuple(q.shape[1:])
    want_q = (num_heads * head_dim, *rest)
    _check(tuple(q.shape) == want_q, f"q shape {tuple(q.shape)} != {want_q}")
    for name, t in (("k", k), ("v", v)):
        want = (num_query_groups * head_dim, *rest)
        _check(tuple(t.shape) == want, f"{name} shape {tuple(t.shape)} != {want}")
    qg = q.reshape(num_query_groups, hpg * head_dim, *rest)  # [ng, hpg*d, (h)]
    kg = k.reshape(num_query_groups, head_dim, *rest)  # [ng, d, (h)]
    vg = v.reshape(num_query_groups, head_dim, *rest)  # [ng, d, (h)]
    return torch.cat([qg, kg, vg], dim=1).reshape(-1, *rest)  # [ng*(hpg+2)*d, (h)]


def split_qkv(qkv, num_heads: int, num_query_groups: int, head_dim: int):
    """Inverse of ``merge_qkv``: Megatron's fused ``linear_qkv`` weight or bias -> (q, k, v) in HF layout."""
    _check(num_heads % num_query_groups == 0, f"heads {num_heads} not divisible by groups {num_query_groups}")
    hpg = num_heads // num_query_groups
    rest = tuple(qkv.shape[1:])
    rows = num_query_groups * (hpg + 2) * head_dim
    _check(qkv.shape[0] == rows, f"qkv rows {qkv.shape[0]} != ng*(heads/ng+2)*d = {rows}")
    grouped = qkv.reshape(num_query_groups, (hpg + 2) * head_dim, *rest)  # [ng, (hpg+2)*d, (h)]
    q, k, v = torch.split(grouped, [hpg * head_dim, head_dim, head_dim], dim=1)
    return (
        q.reshape(num_heads * head_dim, *rest).contiguous(),  # [nh*d, (h)]
        k.reshape(num_query_groups * head_dim, *rest).contiguous(),  # [ng*d, (h)]
        v.reshape(num_query_groups * head_dim, *rest).contiguous(),  # [ng*d, (h)]
    )


def merge_fc1(gate, up) -> torch.Tensor:
    """HF gate_proj / up_proj [ffn, h] -> Megatron's SwiGLU ``linear_fc1`` [2*ffn, h] = [gate; up].

    Megatron computes silu(first half) * second half, so the gate comes first. (Under tensor parallelism each rank
    holds [gate_r; up_r], not a contiguous slice of this full tensor: the sharder must split gate and up apart.)
    """
    _check(gate.shape == up.shape, f"gate shape {tuple(gate.shape)} != up shape {tuple(up.shape)}")
    return torch.cat([gate, up], dim=0)


def split_fc1(fc1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``merge_fc1``: [2*ffn, h] -> (gate [ffn, h], up [ffn, h])."""
    _check(fc1.shape[0] % 2 == 0, f"fc1 rows {fc1.shape[0]} are odd: not a [gate; up] tensor")
    gate, up = torch.chunk(fc1, 2, dim=0)
    return gate.contiguous(), up.contiguous()


def pad_vocab(weight, padded: int) -> torch.Tensor:
    """Embedding or output weight [v, h] -> [padded, h]; the new rows are zero."""
    _check(weight.shape[0] <= padded, f"vocab rows {weight.shape[0]} exceed the padded size {padded}")
    extra = weight.new_zeros((padded - weight.shape[0], *weight.shape[1:]))
    return torch.cat([weight, extra], dim=0)


def unpad_vocab(weight, vocab_size: int) -> torch.Tensor:
    """Inverse of ``pad_vocab``: keep the first ``vocab_size`` rows."""
    _check(weight.shape[0] >= vocab_size, f"vocab rows {weight.shape[0]} fewer than vocab_size {vocab_size}")
    return weight[:vocab_size].contiguous()


# --------------------------------------------------------------------------------------------------------------------
# Declarative weight map: Megatron-Core GPTModel names <-> Hugging Face names
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """A named pair of pure functions between some HF tensors and one Megatron-Core tensor."""

    name: str
    to_mcore: Callable[[Sequence[torch.Tensor], ModelConfig, int], torch.Tensor]
    """(HF tensors, config, padded vocab) -> Megatron-Core tensor."""
    to_hf: Callable[[torch.Tensor, ModelConfig], Tuple[torch.Tensor, ...]]
    """(Megatron-Core tensor, config) -> HF tensors, in the rule's order."""


COPY = Transform("copy", lambda ts, cfg, padded: ts[0], lambda t, cfg: (t,))
QKV = Transform(
    "qkv",
    lambda ts, cfg, padded: merge_qkv(*ts, cfg.num_attention_heads, query_groups(cfg), head_dim(cfg)),
    lambda t, cfg: split_qkv(t, cfg.num_attention_heads, query_groups(cfg), head_dim(cfg)),
)
FC1 = Transform("fc1", lambda ts, cfg, padded: merge_fc1(*ts), lambda t, cfg: split_fc1(t))
VOCAB = Transform(
    "vocab", lambda ts, cfg, padded: pad_vocab(ts[0], padded), lambda t, cfg: (unpad_vocab(t, cfg.vocab_size),)
)


@dataclass(frozen=True)
class Rule:
    """One Megatron-Core tensor made of the listed HF tensors. Layer rules name tensors relative to a layer
    (``decoder.layers.{i}.`` / ``model.layers.{i}.``); ``{input_norm}`` and ``{pre_mlp_norm}`` stand for the
    spec-dependent norm names (see ``NORM_NAMES``)."""

    mcore: str
    hf: Tuple[str, ...]
    transform: Transform = COPY
    untied_only: bool = False
    """Only present when the output layer has its own weight (``tie_word_embeddings`` false)."""


# The TE spec fuses each pre-norm into the linear layer that follows it; the local spec keeps separate norms.
NORM_NAMES = {
    True: {
        "input_norm": "self_attention.linear_qkv.layer_norm_weight",
        "pre_mlp_norm": "mlp.linear_fc1.layer_norm_weight",
    },
    False: {"input_norm": "input_layernorm.weight", "pre_mlp_norm": "pre_mlp_layernorm.weight"},
}
MCORE_LAYER = "decoder.layers.{i}."
HF_LAYER = "model.layers.{i}."

MODEL_RULES = (
    Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), VOCAB),
    Rule("decoder.final_layernorm.weight", ("model.norm.weight",)),
    Rule("output_layer.weight", ("lm_head.weight",), VOCAB, untied_only=True),
)
LAYER_RULES = (
    Rule("{input_norm}", ("input_layernorm.weight",)),
    Rule(
        "self_attention.linear_qkv.weight",
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        QKV,
    ),
    Rule("self_attention.linear_proj.weight", ("self_attn.o_proj.weight",)),
    Rule("{pre_mlp_norm}", ("post_attention_layernorm.weight",)),
    Rule("mlp.linear_fc1.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), FC1),
    Rule("mlp.linear_fc2.weight", ("mlp.down_proj.weight",)),
)
QKV_BIAS_RULE = Rule(
    "self_attention.linear_qkv.bias", ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"), QKV
)
# HF keys that carry no weights (buffers some transformers versions saved).
_HF_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_shapes(cfg: ModelConfig) -> Dict[str, Tuple[int, ...]]:
    """Expected HF tensor shapes, by model-level name or layer-relative name."""
    h, f, v = cfg.hidden_size, cfg.ffn_hidden_size, cfg.vocab_size
    q, kv = cfg.num_attention_heads * head_dim(cfg), query_groups(cfg) * head_dim(cfg)
    return {
        "model.embed_tokens.weight": (v, h),
        "model.norm.weight": (h,),
        "lm_head.weight": (v, h),
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (q, h),
        "self_attn.k_proj.weight": (kv, h),
        "self_attn.v_proj.weight": (kv, h),
        "self_attn.q_proj.bias": (q,),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (h, q),
        "mlp.gate_proj.weight": (f, h),
        "mlp.up_proj.weight": (f, h),
        "mlp.down_proj.weight": (h, f),
    }


def expand_rules(
    cfg: ModelConfig, layer_rules: Sequence[Rule], use_te: bool
) -> Iterable[Tuple[str, Tuple[str, ...], Tuple[str, ...], Transform]]:
    """Every (mcore name, HF names, HF shape keys, transform) of the whole model, layers numbered from 0."""
    norms = NORM_NAMES[use_te]
    for rule in MODEL_RULES:
        if not (rule.untied_only and cfg.tie_word_embeddings):
            yield rule.mcore, rule.hf, rule.hf, rule.transform
    for i in range(cfg.num_layers):
        for rule in layer_rules:
            mcore = MCORE_LAYER.format(i=i) + rule.mcore.format(**norms)
            yield mcore, tuple(HF_LAYER.format(i=i) + n for n in rule.hf), rule.hf, rule.transform


def _check_shape(name: str, tensor: torch.Tensor, want: Tuple[int, ...]) -> None:
    _check(tuple(tensor.shape) == want, f"{name} has shape {tuple(tensor.shape)}, the config says {want}")


def _uses_te_names(mcore_sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.endswith(NORM_NAMES[True]["input_norm"]) for k in mcore_sd)


def state_dict_to_hf(
    mcore_sd: Mapping[str, torch.Tensor], cfg: ModelConfig, layer_rules: Sequence[Rule]
) -> Dict[str, torch.Tensor]:
    """Full Megatron-Core GPTModel state dict (either spec's names) -> HF state dict; vocab padding is stripped.

    Tied models get no ``lm_head.weight`` (HF ties it to the embedding on load). Unknown Megatron-Core tensors
    raise; ``_extra_state`` entries (TE / FP8 metadata) are skipped.
    """
    shapes, out = hf_shapes(cfg), {}
    rules = list(expand_rules(cfg, layer_rules, _uses_te_names(mcore_sd)))
    for mcore, hf_names, shape_keys, transform in rules:
        _check(mcore in mcore_sd, f"Megatron-Core state dict lacks {mcore}")
        for name, key, tensor in zip(hf_names, shape_keys, transform.to_hf(mcore_sd[mcore], cfg)):
            _check_shape(name, tensor, shapes[key])
            out[name] = tensor
    known = {r[0] for r in rules}
    unknown = [k for k in mcore_sd if k not in known and not k.endswith("_extra_state")]
    if cfg.tie_word_embeddings:
        # A last pipeline stage of a tied model keeps its own copy of the embedding; it carries nothing new.
        unknown = [k for k in unknown if k != "output_layer.weight"]
    _check(not unknown, f"Megatron-Core tensors with no HF counterpart for this config: {unknown[:4]}")
    return out


def _rule_table(cfg: ModelConfig, layer_rules: Sequence[Rule], use_te: bool):
    return {mcore: (hf, keys, transform) for mcore, hf, keys, transform in expand_rules(cfg, layer_rules, use_te)}


def mcore_order(cfg: ModelConfig, layer_rules: Sequence[Rule], keys) -> List[str]:
    """The Megatron-Core tensor names among ``keys`` in the weight map's order (model tensors, then layer by layer);
    the tied output layer (a last pipeline stage's copy of the embedding) is dropped, anything else unknown raises.
    """
    keys = [k for k in keys if not k.endswith("_extra_state")]
    table = _rule_table(cfg, layer_rules, any(k.endswith(NORM_NAMES[True]["input_norm"]) for k in keys))
    if cfg.tie_word_embeddings:
        keys = [k for k in keys if k != "output_layer.weight"]
    unknown = [k for k in keys if k not in table]
    _check(not unknown, f"Megatron-Core tensors with no HF counterpart for this config: {unknown[:4]}")
    missing = [k for k in table if k not in set(keys)]
    _check(not missing, f"Megatron-Core tensors missing from the model: {missing[:4]}")
    return [k for k in table if k in set(keys)]


def tensor_to_hf(mcore: str, tensor: torch.Tensor, cfg: ModelConfig,
                 layer_rules: Sequence[Rule]) -> List[Tuple[str, torch.Tensor]]:
    """One full Megatron-Core tensor -> its (HF name, tensor) pairs by the same rules as ``state_dict_to_hf``
    (vocabulary padding stripped; outputs are views where the transform allows). Works on meta tensors (shapes)."""
    table = {**_rule_table(cfg, layer_rules, False), **_rule_table(cfg, layer_rules, True)}  # either spec's names
    _check(mcore in table, f"Megatron-Core tensor {mcore} has no HF counterpart for this config")
    hf_names, shape_keys, transform = table[mcore]
    shapes, out = hf_shapes(cfg), []
    for name, key, t in zip(hf_names, shape_keys, transform.to_hf(tensor, cfg)):
        _check_shape(name, t, shapes[key])
        out.append((name, t))
    return out


def state_dict_from_hf(
    hf_sd: Mapping[str, torch.Tensor], cfg: ModelConfig, layer_rules: Sequence[Rule], use_te: bool, tp: int = 1
) -> Dict[str, torch.Tensor]:
    """HF state dict -> full Megatron-Core GPTModel state dict with the ``use_te`` spec's names; the embedding
    (and untied output layer) rows are padded to the vocab padded for ``tp``.

    Tied models get no ``output_layer.weight`` (a single-stage GPTModel has none; a last pipeline stage copies
    the embedding) and an ``lm_head.weight`` in ``hf_sd`` is ignored. Unknown HF tensors raise.
    """
    shapes, out = hf_shapes(cfg), {}
    padded = padded_vocab_size(cfg.vocab_size, cfg.make_vocab_size_divisible_by, tp)
    used = set()
    for mcore, hf_names, shape_keys, transform in expand_rules(cfg, layer_rules, use_te):
        tensors = []
        for name, key in zip(hf_names, shape_keys):
            _check(name in hf_sd, f"HF state dict lacks {name}")
            _check_shape(name, hf_sd[name], shapes[key])
            tensors.append(hf_sd[name])
        used.update(hf_names)
        out[mcore] = transform.to_mcore(tensors, cfg, padded)
    if cfg.tie_word_embeddings:
        used.add("lm_head.weight")
    unknown = [k for k in hf_sd if k not in used and not k.endswith(_HF_IGNORED_SUFFIXES)]
    _check(not unknown, f"HF tensors with no Megatron-Core counterpart for this config: {unknown[:4]}")
    return out

