"""Megatron-LM's legacy ``torch`` checkpoints read as global tensors, any TP/PP.

Each tensor/pipeline rank wrote ``mp_rank_TT[_PPP]/model_optim_rng.pt`` (``_PPP`` only with PP > 1) holding its
``state_dict_for_save_checkpoint``: unstacked layer keys numbered within the rank's pipeline stage
(``decoder.layers.0...`` on every stage), tensor-parallel shards, the local spec's norm names
(``input_layernorm`` / ``pre_mlp_layernorm``) or Transformer Engine's fused ones, ``_extra_state`` entries.

``LegacyCheckpoint`` serves what ``sources.McoreRows`` asks of a reader (``tensor_meta``, ``row_boundaries``,
``read``) under the torch_dist key names (``layout``): stage offsets are counted from the layers each stage holds
(uneven pipeline splits included), shards are concatenated along their partition dimension (rows for
column-parallel weights, columns for row-parallel ones), and SwiGLU's fc1, whose every shard is [gate_r; up_r],
is reassembled as the global [gate; up]. Rank files are memory-mapped; one assembled tensor is kept at a time.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Tuple

import torch

from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import FINAL_NORM_MODULE, LAYER_PREFIX, McoreTensor

FILE = "model_optim_rng.pt"
_DIR_RE = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?$")
_LAYER_KEY = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
# Local-spec norm names -> the Transformer Engine names the torch_dist keys use.
_NORM_ALIASES = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}
# Layer parameter -> tensor-parallel partition dim (None: replicated).
_LAYER_SPLIT = {
    "self_attention.linear_qkv.weight": 0,
    "self_attention.linear_qkv.bias": 0,
    "self_attention.linear_proj.weight": 1,
    "mlp.linear_fc1.weight": 0,
    "mlp.linear_fc2.weight": 1,
    "self_attention.linear_qkv.layer_norm_weight": None,
    "mlp.linear_fc1.layer_norm_weight": None,
}
_MODEL_SPLIT = {"embedding.word_embeddings.weight": 0, "output_layer.weight": 0, f"{FINAL_NORM_MODULE}.weight": None}
_SWIGLU_FC1 = "mlp.linear_fc1.weight"


def load_pickled(path: Path, mmap: bool = False) -> dict:
    """A ``torch.save`` file Megatron wrote (common.pt, model_optim_rng.pt), loaded with ``weights_only`` and the
    classes Megatron-Core registers as safe (argparse.Namespace, its enums, numpy RNG state)."""
    import pickle

    import megatron.core  # noqa: F401  (registers Megatron-Core's safe globals with torch.serialization)

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConvertError(f"{path}: cannot be read safely ({first[:200]})") from None
    except (OSError, RuntimeError) as exc:
        raise ConvertError(f"{path}: cannot be read ({exc.__class__.__name__}: {str(exc)[:200]})") from None


def rank_files(path: Path) -> Dict[Tuple[int, int], Path]:
    """(tp rank, pp rank) -> that rank's file, for every rank directory of the checkpoint."""
    out = {}
    for d in Path(path).iterdir():
        m = _DIR_RE.match(d.name)
        if m and (d / FILE).is_file():
            out[(int(m.group(1)), int(m.group(2) or 0))] = d / FILE
    if not out:
        raise ConvertError(f"{path} has no mp_rank_*/{FILE}: not a legacy Megatron-LM checkpoint")
    return dict(sorted(out.items()))


class LegacyCheckpoint:
    """Global tensors of a legacy checkpoint (see the module docstring)."""

    def __init__(self, path: Path, args):
        self.path = Path(path)
        files = rank_files(self.path)
        tp = int(getattr(args, "tensor_model_parallel_size", 1))
        pp = int(getattr(args, "pipeline_model_parallel_size", 1))
        expected = {(t, p) for t in range(tp) for p in range(pp)}
        if set(files) != expected:
            raise ConvertError(
                f"{self.path}: the args say TP={tp} x PP={pp} but the rank directories are "
                f"{sorted(files)}: the checkpoint is incomplete"
            )
        self.tp, self.pp = tp, pp
        self.swiglu = bool(getattr(args, "swiglu", True))
        self._states = {}
        for rank, file in files.items():
            state = load_pickled(file, mmap=True)
            if "model" not in state:
                keys = sorted(k for k in state if k.startswith("model"))
                raise ConvertError(f"{file}: holds {keys or 'no model'}: virtual pipeline stages are not supported")
            self._states[rank] = state["model"]
        self._index = self._build_index()
        self._cache: Optional[Tuple[Tuple[str, Optional[int]], torch.Tensor]] = None

    def _build_index(self) -> Dict[Tuple[str, Optional[int]], List[Tuple[int, int, str]]]:
        """(torch_dist key, global layer) -> [(tp rank, pp rank, stored key)] in TP order."""
        index: Dict[Tuple[str, Optional[int]], List[Tuple[int, int, str]]] = {}
        offset = 0
        for p in range(self.pp):
            layers = set()
            for t in range(self.tp):
                for key in self._states[(t, p)]:
                    if key.endswith("_extra_state"):
                        continue
                    m = _LAYER_KEY.match(key)
                    if m:
                        local, name = int(m.group(1)), _NORM_ALIASES.get(m.group(2), m.group(2))
                        layers.add(local)
                        index.setdefault((LAYER_PREFIX + name, offset + local), []).append((t, p, key))
                    elif p == 0 or key not in ("embedding.word_embeddings.weight",):
                        index.setdefault((key, None), []).append((t, p, key))
            offset += len(layers)
        self.num_layers = offset
        return index

    def _split_dim(self, key: str) -> Optional[int]:
        if key.startswith(LAYER_PREFIX):
            return _LAYER_SPLIT.get(key[len(LAYER_PREFIX) :], None)
        return _MODEL_SPLIT.get(key, None)

    def _assemble(self, key: str, layer: Optional[int]) -> torch.Tensor:
        if self._cache is not None and self._cache[0] == (key, layer):
            return self._cache[1]
        parts = self._index.get((key, layer))
        if not parts:
            raise ConvertError(f"{self.path} lacks {key}" + ("" if layer is None else f" of layer {layer}"))
        shards = [self._states[(t, p)][k] for t, p, k in parts if p == parts[-1][1]]
        dim = self._split_dim(key)
        if dim is None or len(shards) == 1:
            full = shards[0]
        elif key.endswith(_SWIGLU_FC1) and self.swiglu:  # every shard is [gate_r; up_r]
            halves = [s.chunk(2, dim=0) for s in shards]
            full = torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
        else:
            full = torch.cat(shards, dim=dim)
        self._cache = ((key, layer), full)
        return full

    def tensor_meta(self, key: str):
        """Global size (with the layer axis for layer keys) and dtype of ``key``, or None when absent."""
        if key.startswith(LAYER_PREFIX):
            if (key, 0) not in self._index:
                return None
            one = self._assemble(key, 0)
            size = (self.num_layers, *one.shape)
        else:
            if (key, None) not in self._index:
                return None
            one = self._assemble(key, None)
            size = tuple(one.shape)
        return SimpleNamespace(size=torch.Size(size), properties=SimpleNamespace(dtype=one.dtype))

    def row_boundaries(self, tensor: McoreTensor) -> List[int]:
        return [0]

    def read(self, tensor: McoreTensor, start: int, stop: int) -> torch.Tensor:
        return self._assemble(tensor.key, tensor.layer)[start:stop]
