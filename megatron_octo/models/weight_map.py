"""The declarative weight map between Megatron-Core ``GPTModel`` names and Hugging Face names.

Named pure transforms (``merge_qkv`` / ``split_qkv``, ``merge_fc1`` / ``split_fc1``, ``pad_vocab`` / ``unpad_vocab``)
assert the shapes they are given; ``Rule`` tables say which HF tensors make each Megatron-Core tensor. A family
picks its per-layer rules (``LAYER_RULES``, plus ``QKV_BIAS_RULE`` for Qwen2).

These functions work on *full* (unsharded, single pipeline stage) tensors; splitting them over tensor- and
pipeline-parallel ranks is the converter's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Sequence, Set, Tuple

import torch

from megatron_octo.config.schema import ModelConfig
from megatron_octo.models.shapes import padded_vocab_size, shape


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


@dataclass(frozen=True)
class Transform:
    """A named pair of pure functions between some HF tensors and one Megatron-Core tensor."""

    name: str
    to_mcore: Callable[[Sequence[torch.Tensor], ModelConfig, int], torch.Tensor]
    """(HF tensors, config, padded vocab) -> Megatron-Core tensor."""
    to_hf: Callable[[torch.Tensor, ModelConfig], Tuple[torch.Tensor, ...]]
    """(Megatron-Core tensor, config) -> HF tensors, in the rule's order."""


def _heads(cfg: ModelConfig) -> Tuple[int, int, int]:
    """(query heads, key-value groups, head dim): the layout arguments of ``merge_qkv`` / ``split_qkv``."""
    s = shape(cfg)
    return s.num_attention_heads, s.query_groups, s.head_dim


COPY = Transform("copy", lambda ts, cfg, padded: ts[0], lambda t, cfg: (t,))
QKV = Transform(
    "qkv",
    lambda ts, cfg, padded: merge_qkv(ts[0], ts[1], ts[2], *_heads(cfg)),
    lambda t, cfg: split_qkv(t, *_heads(cfg)),
)
FC1 = Transform("fc1", lambda ts, cfg, padded: merge_fc1(*ts), lambda t, cfg: split_fc1(t))
VOCAB = Transform(
    "vocab", lambda ts, cfg, padded: pad_vocab(ts[0], padded), lambda t, cfg: (unpad_vocab(t, shape(cfg).vocab_size),)
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
    s = shape(cfg)
    h, f, v = s.hidden_size, s.ffn_hidden_size, s.vocab_size
    q, kv = s.num_attention_heads * s.head_dim, s.query_groups * s.head_dim
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
    for i in range(shape(cfg).num_layers):
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
    the tied output layer (a last pipeline stage's copy of the embedding) is dropped, anything else unknown raises,
    and every tensor the config implies must be there."""
    keys = [k for k in keys if not k.endswith("_extra_state")]
    table = _rule_table(cfg, layer_rules, any(k.endswith(NORM_NAMES[True]["input_norm"]) for k in keys))
    if cfg.tie_word_embeddings:
        keys = [k for k in keys if k != "output_layer.weight"]
    present = set(keys)
    unknown = [k for k in keys if k not in table]
    _check(not unknown, f"Megatron-Core tensors with no HF counterpart for this config: {unknown[:4]}")
    missing = [k for k in table if k not in present]
    _check(not missing, f"Megatron-Core tensors missing from the model: {missing[:4]}")
    return list(table)


def tensor_to_hf(
    mcore: str, tensor: torch.Tensor, cfg: ModelConfig, layer_rules: Sequence[Rule]
) -> List[Tuple[str, torch.Tensor]]:
    """One full Megatron-Core tensor (either spec's name) -> its (HF name, tensor) pairs by the rules of
    ``state_dict_to_hf`` (vocabulary padding stripped; outputs are views where the transform allows, so a stream
    of these needs no second copy of the model). Works on meta tensors (shapes only)."""
    table = {**_rule_table(cfg, layer_rules, False), **_rule_table(cfg, layer_rules, True)}
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
    padded = padded_vocab_size(shape(cfg).vocab_size, cfg.make_vocab_size_divisible_by, tp)
    used: Set[str] = set()
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
