"""The weight plan: which rows of which Megatron-Core checkpoint tensor hold which rows of which Hugging Face tensor.

The plan is derived from the family's declarative rule table (``models.weight_map.MODEL_RULES`` and the family's
``LAYER_RULES``, expanded by ``models.weight_map.expand_rules``): a rule says which HF tensors make one Megatron-Core
tensor and through which named transform (``copy``, ``qkv``, ``fc1``, ``vocab``). Every one of those transforms is a
rearrangement of whole rows (dim 0), so here each is restated as a *row map*: a list of ``Segment`` s saying
"Megatron rows [m, m+n) are HF tensor X rows [r, r+n)". Rows no segment covers are vocabulary padding (zeros).
With row maps, both directions stream in row blocks of bounded size instead of materializing whole tensors; the
test suite checks that each row map reproduces its transform's ``to_mcore`` on random tensors.

Checkpoint keys are the ones Megatron-Core's ``GPTModel.sharded_state_dict()`` declares: transformer layers are
stacked under one key per parameter with a prepended layer axis (``decoder.layers.self_attention.linear_qkv.weight``
of global shape [num_layers, rows, cols]), norms under their Transformer Engine names (the local spec maps its
``input_layernorm`` to ``self_attention.linear_qkv.layer_norm_weight``), SwiGLU's fc1 as the global [gate; up], a
tied output layer under ``embedding.word_embeddings.weight``. Shapes here are *global* (unsharded): the torch_dist
format stores global tensors, so tensor and pipeline parallelism only change the vocabulary padding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from megatron_octo.config.schema import ModelConfig
from megatron_octo.convert.errors import ConvertError
from megatron_octo.models import get_family, weight_map
from megatron_octo.models.shapes import head_dim, padded_vocab_size, query_groups, require_shape, shape

_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
LAYER_PREFIX = "decoder.layers."
# Linear modules of a layer carry an ``_extra_state`` (None for the local spec, FP8 metadata for TE): Megatron-Core
# saves it as one ShardedObject per layer, and a load asks for it, so a converted checkpoint holds it too.
EXTRA_STATE = "_extra_state"
FINAL_NORM_MODULE = "decoder.final_layernorm"


@dataclass(frozen=True)
class McoreTensor:
    """One Megatron-Core tensor of one layer (or of the model), unsharded."""

    key: str
    """Checkpoint key (stacked layers share one key)."""
    layer: Optional[int]
    """Global layer number for stacked keys (the prepended axis), None for model-level tensors."""
    shape: Tuple[int, ...]
    """Shape of this layer's tensor (without the layer axis); vocabulary rows padded."""

    @property
    def label(self) -> str:
        return self.key if self.layer is None else f"{self.key}[{self.layer}]"


@dataclass(frozen=True)
class HFTensor:
    name: str
    shape: Tuple[int, ...]


@dataclass(frozen=True)
class Segment:
    """Megatron rows [mcore_row, mcore_row + rows) are rows [hf_row, hf_row + rows) of HF tensor ``hf_name``."""

    mcore_row: int
    hf_name: str
    hf_row: int
    rows: int


@dataclass(frozen=True)
class Entry:
    """One rule applied to one layer: a Megatron-Core tensor and the HF tensors it is made of."""

    mcore: McoreTensor
    hf: Tuple[HFTensor, ...]
    segments: Tuple[Segment, ...]


@dataclass
class WeightPlan:
    """Every tensor of a model in both layouts, and how their rows correspond."""

    cfg: ModelConfig
    padded_vocab: int
    entries: List[Entry]

    @property
    def num_layers(self) -> int:
        return shape(self.cfg).num_layers

    def hf_tensors(self) -> List[HFTensor]:
        """HF tensors in the order a Hub checkpoint lists them (embedding, layers, final norm, lm_head)."""
        tensors = [t for e in self.entries for t in e.hf]
        first = [t for t in tensors if t.name == "model.embed_tokens.weight"]
        last = [t for t in tensors if not t.name.startswith("model.layers.") and t not in first]
        return first + [t for t in tensors if t.name.startswith("model.layers.")] + last

    def hf_segments(self) -> Dict[str, List[Tuple[McoreTensor, Segment]]]:
        """For each HF tensor, the (Megatron tensor, segment) pairs that cover its rows, in HF row order."""
        out: Dict[str, List[Tuple[McoreTensor, Segment]]] = {}
        for entry in self.entries:
            for seg in entry.segments:
                out.setdefault(seg.hf_name, []).append((entry.mcore, seg))
        return {name: sorted(pairs, key=lambda p: p[1].hf_row) for name, pairs in out.items()}

    def global_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Checkpoint key -> global shape (stacked keys get the leading layer axis)."""
        out = {}
        for e in self.entries:
            t = e.mcore
            out[t.key] = t.shape if t.layer is None else (self.num_layers, *t.shape)
        return out

    def extra_state_keys(self) -> List[str]:
        """ShardedObject unique keys (``<module>._extra_state/shard_<offset>_<shape>``): the layers' linear modules
        (both specs declare them) and the final norm (Transformer Engine's RMSNorm, an ``ops`` module in TE 2.x,
        declares one under the TE spec; loads with the local spec ignore it, as they ignore any unexpected key)."""
        modules = sorted(
            {
                e.mcore.key[: -len(".weight")]
                for e in self.entries
                if e.mcore.layer is not None
                and e.mcore.key.endswith(".weight")
                and not e.mcore.key.endswith("layer_norm_weight")
            }
        )
        n = self.num_layers
        layers = [f"{m}.{EXTRA_STATE}/shard_{i}_{n}" for i in range(n) for m in modules]
        return layers + [f"{FINAL_NORM_MODULE}.{EXTRA_STATE}/shard_0_1"]


# --------------------------------------------------------------------------------------------------------------------
# Row maps of the named transforms (models.weight_map.COPY / QKV / FC1 / VOCAB)
# --------------------------------------------------------------------------------------------------------------------

RowMap = Callable[[Sequence[HFTensor], ModelConfig, int], Tuple[int, List[Segment]]]


def _copy_rows(hf: Sequence[HFTensor], cfg: ModelConfig, padded: int) -> Tuple[int, List[Segment]]:
    (t,) = hf
    return t.shape[0], [Segment(0, t.name, 0, t.shape[0])]


def _vocab_rows(hf: Sequence[HFTensor], cfg: ModelConfig, padded: int) -> Tuple[int, List[Segment]]:
    """The real vocabulary rows first; rows [vocab_size, padded) are padding (no segment: zeros)."""
    (t,) = hf
    return padded, [Segment(0, t.name, 0, t.shape[0])]


def _fc1_rows(hf: Sequence[HFTensor], cfg: ModelConfig, padded: int) -> Tuple[int, List[Segment]]:
    """SwiGLU fc1 = [gate; up]."""
    gate, up = hf
    f = gate.shape[0]
    return 2 * f, [Segment(0, gate.name, 0, f), Segment(f, up.name, 0, f)]


def _qkv_rows(hf: Sequence[HFTensor], cfg: ModelConfig, padded: int) -> Tuple[int, List[Segment]]:
    """Fused QKV interleaved per key-value group: for each group g, its nh/ng query heads, its key head, its value
    head (``models.weight_map.merge_qkv``)."""
    q, k, v = hf
    ng, d = query_groups(cfg), head_dim(cfg)
    hpg = shape(cfg).num_attention_heads // ng
    segments, row = [], 0
    for g in range(ng):
        for t, first, n in ((q, g * hpg * d, hpg * d), (k, g * d, d), (v, g * d, d)):
            segments.append(Segment(row, t.name, first, n))
            row += n
    return row, segments


ROW_MAPS: Dict[str, RowMap] = {"copy": _copy_rows, "vocab": _vocab_rows, "fc1": _fc1_rows, "qkv": _qkv_rows}


# --------------------------------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------------------------------


def check_layout(cfg: ModelConfig, tp: int, pp: int) -> None:
    """One-line ConvertError when the model cannot be split ``tp`` x ``pp`` ways (Megatron-Core's requirements)."""
    if tp < 1 or pp < 1:
        raise ConvertError(f"--tp {tp} --pp {pp}: both must be >= 1")
    s = shape(cfg)
    heads, groups = s.num_attention_heads, s.query_groups
    if heads % tp or groups % tp:
        ok = [n for n in range(1, groups + 1) if heads % n == 0 and groups % n == 0]
        raise ConvertError(
            f"--tp {tp} must divide the {heads} attention heads and the {groups} key-value groups: "
            f"use --tp {' or '.join(map(str, ok))}"
        )
    if s.ffn_hidden_size % tp:
        raise ConvertError(f"--tp {tp} must divide the MLP width {s.ffn_hidden_size}")
    if s.num_layers % pp:
        raise ConvertError(f"--pp {pp} must divide the {s.num_layers} layers")


def _split_name(mcore_name: str) -> Tuple[str, Optional[int]]:
    match = _LAYER_RE.match(mcore_name)
    if match is None:
        return mcore_name, None
    return LAYER_PREFIX + match.group(2), int(match.group(1))


def build_plan(cfg: ModelConfig, tp: int = 1) -> WeightPlan:
    """The weight plan of ``cfg`` with the vocabulary padded for ``tp`` (``make_vocab_size_divisible_by * tp``);
    a ConvertError when ``cfg`` names an unknown family or lacks a shape field."""
    try:
        require_shape(cfg)
        family = get_family(cfg.family)
        padded = padded_vocab_size(shape(cfg).vocab_size, cfg.make_vocab_size_divisible_by, tp)
    except ValueError as exc:
        raise ConvertError(f"model config: {exc}") from None
    shapes = weight_map.hf_shapes(cfg)
    entries = []
    for mcore_name, hf_names, shape_keys, transform in weight_map.expand_rules(cfg, family.layer_rules, use_te=True):
        row_map = ROW_MAPS.get(transform.name)
        if row_map is None:
            raise NotImplementedError(f"weight transform {transform.name!r} has no row map in {__name__}: add one")
        hf = tuple(HFTensor(name, tuple(shapes[k])) for name, k in zip(hf_names, shape_keys))
        rows, segments = row_map(hf, cfg, padded)
        key, layer = _split_name(mcore_name)
        entries.append(Entry(McoreTensor(key, layer, (rows, *hf[0].shape[1:])), hf, tuple(segments)))
    return WeightPlan(cfg=cfg, padded_vocab=padded, entries=entries)


def row_blocks(rows: int, row_bytes: int, max_bytes: int) -> List[Tuple[int, int]]:
    """[0, rows) cut into consecutive ranges of at most ``max_bytes`` (at least one row each)."""
    step = max(1, max_bytes // max(row_bytes, 1))
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]
