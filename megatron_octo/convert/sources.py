"""Readers: every input format opened as a ``Source`` that serves the same rows of Megatron-Core tensors.

A *row source* serves row ranges of the global (unsharded) Megatron-Core tensors of the weight plan
(``layout.McoreTensor``), whatever the input's own layout:

- ``HFRows``: a Hugging Face safetensors directory, through the plan's row maps (``layout``);
- ``McoreRows``: a reader of stored global tensors: a torch_dist checkpoint (``dist_io.DistCheckpoint``: ours,
  Megatron-LM's, NeMo's ``model_weights``), a Megatron-LM legacy ``torch`` checkpoint assembled from its per-rank
  files (``legacy_io.LegacyCheckpoint``) or an older Megatron-Core ``zarr`` one (``zarr_io.ZarrCheckpoint``).

``open_source(kind, path, ...)`` opens and checks an input of format ``kind`` (``hf`` / ``mcore`` / ``nemo``): its
config, every tensor's presence and shape, and returns the ``Source`` every writer consumes. Nothing here writes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch

from megatron_octo.config.schema import ModelConfig
from megatron_octo.convert import hf_io, megatron_lm, nemo_format
from megatron_octo.convert.dist_io import check_model_tensors
from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.hf_io import tokenizer_in
from megatron_octo.convert.layout import McoreTensor, WeightPlan, build_plan, row_blocks
from megatron_octo.convert.options import HF_ASSETS
from megatron_octo.utils.hub import HubError, is_hub_id, resolve_model_path

DEFAULT_DIVISIBLE_BY = ModelConfig.make_vocab_size_divisible_by


# --------------------------------------------------------------------------------------------------------------------
# Row sources
# --------------------------------------------------------------------------------------------------------------------


def _row_bytes(t: McoreTensor, dtype: torch.dtype) -> int:
    n = torch.tensor([], dtype=dtype).element_size()
    for s in t.shape[1:]:
        n *= s
    return n


class HFRows:
    """Rows of Megatron-Core tensors assembled from an HF checkpoint through the plan's row maps."""

    def __init__(self, hf: hf_io.HFCheckpoint, plan: WeightPlan):
        self.hf = hf
        self._entries = {(e.mcore.key, e.mcore.layer): e for e in plan.entries}

    def dtype(self, t: McoreTensor) -> torch.dtype:
        return self.hf.tensors[self._entries[(t.key, t.layer)].hf[0].name].dtype

    def blocks(self, t: McoreTensor, max_bytes: int) -> List[Tuple[int, int]]:
        return row_blocks(t.shape[0], _row_bytes(t, self.dtype(t)), max_bytes)

    def read(self, t: McoreTensor, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop): the HF rows the segments name, zeros where none does (vocabulary padding). A block
        inside one segment is the tensor read from disk itself (no copy)."""
        entry, dtype = self._entries[(t.key, t.layer)], self.dtype(t)
        parts, row = [], start
        for seg in entry.segments:
            lo, hi = max(start, seg.mcore_row), min(stop, seg.mcore_row + seg.rows)
            if lo >= hi:
                continue
            if lo > row:
                parts.append(torch.zeros((lo - row, *t.shape[1:]), dtype=dtype))
            first = seg.hf_row + lo - seg.mcore_row
            parts.append(self.hf.read_rows(seg.hf_name, first, first + hi - lo).to(dtype))
            row = hi
        if row < stop:
            parts.append(torch.zeros((stop - row, *t.shape[1:]), dtype=dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class McoreRows:
    """Rows of Megatron-Core tensors from a reader of stored global tensors (``tensor_meta`` / ``row_boundaries``
    / ``read``). Vocabulary rows past the stored ones (more padding in the output layout) are zeros; stored padding
    rows are kept where the output has room for them, as Megatron-Core's own load does."""

    def __init__(self, ckpt):
        self.ckpt = ckpt

    def dtype(self, t: McoreTensor) -> torch.dtype:
        return self.ckpt.tensor_meta(t.key).properties.dtype

    def stored_rows(self, t: McoreTensor) -> int:
        return int(self.ckpt.tensor_meta(t.key).size[0 if t.layer is None else 1])

    def blocks(self, t: McoreTensor, max_bytes: int) -> List[Tuple[int, int]]:
        """Blocks aligned to the stored chunks (a chunk is read whole), cut further to ``max_bytes``."""
        rows, stored = t.shape[0], self.stored_rows(t)
        bounds = [b for b in self.ckpt.row_boundaries(t) if b < min(rows, stored)] + [min(rows, stored)]
        if stored < rows:
            bounds.append(rows)
        out = []
        for lo, hi in zip(bounds, bounds[1:]):
            out += [(lo + a, lo + b) for a, b in row_blocks(hi - lo, _row_bytes(t, self.dtype(t)), max_bytes)]
        return out

    def read(self, t: McoreTensor, start: int, stop: int) -> torch.Tensor:
        stored = self.stored_rows(t)
        if stop <= stored:
            return self.ckpt.read(t, start, stop)
        out = torch.zeros((stop - start, *t.shape[1:]), dtype=self.dtype(t))
        if start < stored:
            out[: stored - start] = self.ckpt.read(t, start, stored)
        return out


# --------------------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Source:
    """An opened, checked input: what every writer consumes."""

    kind: str
    """``hf`` / ``mcore`` / ``nemo``: the side ``--verify`` compares against."""
    path: Path
    """The directory the weights are read from (an extracted one for a .nemo file)."""
    cfg: ModelConfig
    rows: object
    """``HFRows`` or ``McoreRows`` serving Megatron-Core row ranges."""
    assets: Optional[Path]
    """Directory with the original config.json / generation_config.json, if any."""
    tokenizer: Optional[Path]
    lineage: List[dict]
    """The lineage an output made from this source records (oldest first), this source last."""
    notes: List[str] = field(default_factory=list)
    step: int = 0
    """Training step (iteration) of the source; 0 for HF / NeMo / released weights."""
    verify_cfg: Optional[ModelConfig] = None
    """The model description ``--verify`` loads the source with where the checkpoint carries none of ours."""
    native: bool = True
    """False where the source cannot be loaded by its own loader for ``--verify`` (a legacy Megatron-LM checkpoint):
    the comparison then builds the reference model from the same rows."""


def find_tokenizer(ckpt_dir: Path, explicit) -> Optional[Path]:
    """The tokenizer of a Megatron-Core checkpoint: ``explicit`` (checked), else its ``hf_assets``, else the one the
    run's recipe.yaml (``data.tokenizer``) or Megatron-LM's args (``tokenizer_model``) names."""
    if explicit is not None:
        found = tokenizer_in(Path(explicit))
        if found is None:
            raise ConvertError(
                f"--tokenizer {explicit} holds no tokenizer files (tokenizer.json, "
                f"tokenizer_config.json, ...): give a Hugging Face tokenizer directory"
            )
        return found
    found = tokenizer_in(ckpt_dir / HF_ASSETS)
    recipe = ckpt_dir.parent.parent / "recipe.yaml"  # RUN_DIR/checkpoints/iter_N -> RUN_DIR/recipe.yaml
    if found is None and recipe.is_file():
        import yaml

        named = ((yaml.safe_load(recipe.read_text()) or {}).get("data") or {}).get("tokenizer")
        found = tokenizer_in(Path(named)) if named else None
    return found


def open_hf(path: Path, make_vocab_size_divisible_by: int) -> Tuple[hf_io.HFCheckpoint, ModelConfig]:
    """An HF model directory (or Hub model ID) and its ModelConfig, with every tensor's presence and shape checked
    against it."""
    hf = hf_io.HFCheckpoint(hf_dir(path))
    cfg = replace(hf_model_config(hf.config, hf.path), make_vocab_size_divisible_by=make_vocab_size_divisible_by)
    _check_hf_tensors(hf, build_plan(cfg))
    return hf, cfg


def hf_dir(spec) -> Path:
    """The local directory of an HF model directory or Hub model ID (``utils.hub.resolve_model_path``: an existing
    path as it is); the Hub's refusal as a ConvertError, the converter's one error class for bad input."""
    try:
        return resolve_model_path(spec)
    except HubError as exc:
        raise ConvertError(str(exc)) from None


def hf_model_config(config: dict, where: Path) -> ModelConfig:
    """The ModelConfig of an HF config.json (one-line ConvertError for what our families do not read)."""
    from megatron_octo.models import family_for_hf_config

    try:
        family = family_for_hf_config(config)
        archs = config.get("architectures") or [family.architecture]
        if family.architecture not in archs:
            raise ValueError(f"architectures {archs} are not supported: only {family.architecture}")
        return family.from_hf(config)
    except ValueError as exc:
        raise ConvertError(f"{where / hf_io.CONFIG}: {exc}") from None


def model_config_of(spec) -> Tuple[ModelConfig, str]:
    """The model a checkpoint holds, without reading its tensors: (ModelConfig, what it is). ``spec``: an HF model
    directory or Hub ID (config.json), one of our checkpoints (its metadata) or Megatron-LM's (its args)."""
    from megatron_octo.training import checkpoint

    spec = str(spec)
    if is_hub_id(spec) or (Path(spec) / hf_io.CONFIG).is_file():
        path = hf_dir(spec)
        return hf_model_config(hf_io.read_json(path / hf_io.CONFIG, "config.json"), path), "hf"
    found = megatron_lm.locate(spec)
    if found is not None:
        args = megatron_lm.read_args(found)
        vocab, _ = megatron_lm.unpadded_vocab(args, megatron_lm.named_tokenizer(found))
        return megatron_lm.model_config(args, found, vocab), "megatron-lm"
    return model_config(checkpoint.read_meta(checkpoint.resolve(spec))), "mcore"


def _check_hf_tensors(hf: hf_io.HFCheckpoint, plan: WeightPlan) -> None:
    wanted = {t.name: t.shape for t in plan.hf_tensors()}
    missing = [n for n in wanted if n not in hf.tensors]
    if missing:
        raise ConvertError(
            f"{hf.path} lacks {len(missing)} tensor(s) its config.json needs (first: {missing[0]}): "
            f"re-download the model or fix config.json"
        )
    for name, shape in wanted.items():
        if hf.tensors[name].shape != shape:
            raise ConvertError(
                f"{hf.path}: {name} has shape {hf.tensors[name].shape}, config.json says {shape}: "
                f"the weights and config.json do not belong together"
            )
    extra = [
        n
        for n in hf.tensors
        if n not in wanted
        and not n.endswith(hf_io.IGNORED_SUFFIXES)
        and not (n == "lm_head.weight" and plan.cfg.tie_word_embeddings)
    ]
    if extra:
        raise ConvertError(
            f"{hf.path} has {len(extra)} tensor(s) with no place in the {plan.cfg.family} model of its "
            f"config.json (first: {extra[0]}): is config.json the right one?"
        )


@dataclass
class McoreInput:
    """A Megatron-Core checkpoint opened for reading: ours or Megatron-LM's, any of its formats."""

    path: Path
    cfg: ModelConfig
    reader: object
    """``DistCheckpoint`` / ``LegacyCheckpoint`` / ``ZarrCheckpoint``."""
    step: int
    tokens: int
    recipe: str
    lineage: List[dict]
    meta: Optional[object] = None
    """Our ``CheckpointMeta`` (None for Megatron-LM's checkpoints)."""
    native: bool = True
    """Loadable by Megatron-Core's dist_checkpointing (torch_dist)."""
    notes: List[str] = field(default_factory=list)


def open_mcore(spec, tokenizer_dir: Optional[Path] = None) -> McoreInput:
    """A Megatron-Core checkpoint: ours (``DIR``, a run directory, ``DIR:STEP``; see ``training.checkpoint.resolve``)
    or Megatron-LM's (a save folder following its tracker file, an ``iter_N`` / ``release`` folder, ``DIR:STEP``;
    torch_dist, legacy torch or zarr), every model tensor checked against its model config."""
    from megatron_octo.training import checkpoint

    spec = str(spec)
    found = megatron_lm.locate(spec)
    if found is None:
        path = checkpoint.resolve(spec)
        meta = checkpoint.read_meta(path)
        cfg = model_config(meta)
        reader = _dist_reader(path)
        check_model_tensors(reader, build_plan(cfg), path)
        return McoreInput(path, cfg, reader, meta.step, meta.tokens, meta.recipe, list(meta.lineage), meta=meta)
    ckpt = megatron_lm.open_checkpoint(found, tokenizer_dir)
    check_model_tensors(ckpt.reader, build_plan(ckpt.cfg), ckpt.path)
    return McoreInput(
        ckpt.path,
        ckpt.cfg,
        ckpt.reader,
        ckpt.iteration,
        ckpt.tokens,
        "megatron-lm",
        [],
        native=ckpt.format == "torch_dist",
        notes=ckpt.notes,
    )


def _dist_reader(path: Path):
    from megatron_octo.convert.dist_io import DistCheckpoint

    return DistCheckpoint(path)


def model_config(meta) -> ModelConfig:
    """The ModelConfig a checkpoint's metadata records (one-line error when it is not one this version reads)."""
    try:
        return ModelConfig(**meta.model)
    except TypeError as exc:
        raise ConvertError(
            f"the checkpoint's model description does not fit this version's ModelConfig ({exc})"
        ) from None


def _entry(path: Path, step: int, tokens: int, recipe: str) -> dict:
    return {"path": str(Path(path).resolve()), "step": step, "tokens": tokens, "recipe": recipe}


def _hf_source(path, divisible: Optional[int], tp: int, tokenizer: Optional[Path]) -> Source:
    hf, cfg = open_hf(Path(path), divisible or DEFAULT_DIVISIBLE_BY)
    return Source(
        "hf",
        hf.path,
        cfg,
        HFRows(hf, build_plan(cfg, tp)),
        hf.path,
        tokenizer or tokenizer_in(hf.path),
        [_entry(hf.path, 0, 0, "hf")],
    )


def _mcore_source(path, divisible: Optional[int], tokenizer: Optional[Path]) -> Source:
    ckpt = open_mcore(path, tokenizer)
    cfg = replace(ckpt.cfg, make_vocab_size_divisible_by=divisible or ckpt.cfg.make_vocab_size_divisible_by)
    if tokenizer is None:
        tokenizer = find_tokenizer(ckpt.path, None)
        if tokenizer is None and ckpt.meta is None:
            tokenizer = megatron_lm.named_tokenizer(ckpt.path)
    lineage = ckpt.lineage + [_entry(ckpt.path, ckpt.step, ckpt.tokens, ckpt.recipe)]
    return Source(
        "mcore",
        ckpt.path,
        cfg,
        McoreRows(ckpt.reader),
        ckpt.path / HF_ASSETS,
        tokenizer,
        lineage,
        notes=list(ckpt.notes),
        step=ckpt.step,
        verify_cfg=None if ckpt.meta is not None else ckpt.cfg,
        native=ckpt.native,
    )


@contextlib.contextmanager
def open_source(
    kind: str, input_path, scratch: Path, *, tp: int = 1, divisible: Optional[int] = None, tokenizer_dir=None
) -> Iterator[Source]:
    """The input of a conversion, opened and checked (a .nemo file is unpacked under ``scratch`` for the
    duration). ``tp`` sets the vocabulary padding an HF input's rows are served with; ``divisible`` overrides the
    padding multiple (None keeps the input's, 128 for HF); ``tokenizer_dir`` overrides the tokenizer found."""
    explicit = find_tokenizer(Path("."), tokenizer_dir) if tokenizer_dir is not None else None
    if kind == "hf":
        yield _hf_source(input_path, divisible, tp, explicit)
    elif kind == "mcore":
        yield _mcore_source(input_path, divisible, explicit)
    elif kind == "nemo":
        with nemo_format.extracted(Path(input_path), scratch) as src:
            ckpt, note = nemo_format.open_nemo(src)
            cfg = replace(ckpt.cfg, make_vocab_size_divisible_by=divisible or ckpt.cfg.make_vocab_size_divisible_by)
            yield Source(
                "nemo",
                src,
                cfg,
                McoreRows(ckpt.reader),
                ckpt.assets,
                explicit or ckpt.tokenizer(),
                [_entry(Path(input_path), 0, 0, "nemo")],
                notes=[note] if note else [],
            )
    else:
        raise ConvertError(f"--from {kind} is not a format: use hf, mcore or nemo")
