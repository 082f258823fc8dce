"""Hugging Face <-> Megatron-Core conversions, streaming, with staged outputs and optional verification.

All three directions are one loop: a *row source* (``HFRows`` reads the HF checkpoint through the weight plan's
row maps, ``McoreRows`` reads a torch_dist checkpoint) serves row ranges of Megatron-Core tensors, and a writer
stores them either as torch_dist chunks (``to mcore``) or, through the inverse row maps, as safetensors shards
(``to hf``). In memory at a time: a row block or two (``block_bytes``, 64 MiB by default) and, reading torch_dist,
at most 128 MiB of cached stored chunks (or one chunk, if bigger).

Outputs are written under a temporary sibling name and renamed into place only when complete (and verified, with
``verify=True``); a failure removes the temporary directory, so nothing half-written is left under the output name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch

from megatron_octo.config.schema import ModelConfig
from megatron_octo.convert import dist_io, hf_io
from megatron_octo.convert.dist_io import DistCheckpoint, Piece
from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import McoreTensor, WeightPlan, build_plan, row_blocks
from megatron_octo.convert.progress import Progress, human_bytes
from megatron_octo.convert.verify import DEFAULT_ATOL, DEFAULT_KL, DEFAULT_PROMPT, VerifyResult
from megatron_octo.utils.io import OutputExistsError

DEFAULT_BLOCK_BYTES = 64 << 20
DEFAULT_MAX_SHARD = "5GB"
HF_ASSETS = "hf_assets"
"""Subdirectory of a converted Megatron-Core checkpoint keeping the HF config.json, generation_config.json and
tokenizer files, so that converting back restores them."""
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HF_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_VOCAB_KEYS = ("embedding.word_embeddings.weight", "output_layer.weight")


@dataclass
class Options:
    """What every conversion accepts besides its input and output."""

    dtype: Optional[str] = None
    """``fp32`` / ``bf16`` / ``fp16`` for every output tensor; None keeps each tensor's dtype."""
    overwrite: bool = False
    verify: bool = False
    prompt: str = DEFAULT_PROMPT
    atol: float = DEFAULT_ATOL
    kl_tol: float = DEFAULT_KL
    block_bytes: int = DEFAULT_BLOCK_BYTES
    quiet: bool = False


@dataclass
class ConvertResult:
    output: Path
    tensors: int
    bytes: int
    seconds: float
    verify: Optional[VerifyResult] = None
    notes: List[str] = field(default_factory=list)
    """Things the caller should tell the user (e.g. no tokenizer files were found)."""


# --------------------------------------------------------------------------------------------------------------------
# Row sources
# --------------------------------------------------------------------------------------------------------------------


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
    """Rows of Megatron-Core tensors read from a torch_dist checkpoint. Vocabulary rows past the stored ones (more
    padding in the output layout) are zeros; stored padding rows are kept where the output has room for them, as
    Megatron-Core's own load does."""

    def __init__(self, ckpt: DistCheckpoint):
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


def _row_bytes(t: McoreTensor, dtype: torch.dtype) -> int:
    n = torch.tensor([], dtype=dtype).element_size()
    for s in t.shape[1:]:
        n *= s
    return n


# --------------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------------


def open_hf(path: Path, make_vocab_size_divisible_by: int) -> Tuple[hf_io.HFCheckpoint, ModelConfig]:
    """An HF model directory and its ModelConfig, with every tensor's presence and shape checked against it."""
    from megatron_octo.models import family_for_hf_config

    hf = hf_io.HFCheckpoint(path)
    try:
        family = family_for_hf_config(hf.config)
        archs = hf.config.get("architectures") or [family.architecture]
        if family.architecture not in archs:
            raise ValueError(f"architectures {archs} are not supported: only {family.architecture}")
        cfg = family.from_hf(hf.config)
    except ValueError as exc:
        raise ConvertError(f"{hf.path / hf_io.CONFIG}: {exc}") from None
    cfg = replace(cfg, make_vocab_size_divisible_by=make_vocab_size_divisible_by)
    _check_hf_tensors(hf, build_plan(cfg))
    return hf, cfg


def _check_hf_tensors(hf: hf_io.HFCheckpoint, plan: WeightPlan) -> None:
    wanted = {t.name: t.shape for t in plan.hf_tensors()}
    missing = [n for n in wanted if n not in hf.tensors]
    if missing:
        raise ConvertError(f"{hf.path} lacks {len(missing)} tensor(s) its config.json needs (first: {missing[0]}): "
                           f"re-download the model or fix config.json")
    for name, shape in wanted.items():
        if hf.tensors[name].shape != shape:
            raise ConvertError(f"{hf.path}: {name} has shape {hf.tensors[name].shape}, config.json says {shape}: "
                               f"the weights and config.json do not belong together")
    extra = [n for n in hf.tensors if n not in wanted and not n.endswith(hf_io.IGNORED_SUFFIXES)
             and not (n == "lm_head.weight" and plan.cfg.tie_word_embeddings)]
    if extra:
        raise ConvertError(f"{hf.path} has {len(extra)} tensor(s) with no place in the {plan.cfg.family} model of its "
                           f"config.json (first: {extra[0]}): is config.json the right one?")


def open_mcore(spec: str):
    """A Megatron-Core checkpoint (``DIR``, a run directory, or ``DIR:STEP``; see ``training.checkpoint.resolve``):
    (directory, metadata, ModelConfig, reader), every model tensor checked against the ModelConfig."""
    from megatron_octo.convert.logits import model_config
    from megatron_octo.training import checkpoint

    path = checkpoint.resolve(str(spec))
    meta = checkpoint.read_meta(path)
    cfg = model_config(meta)
    reader = DistCheckpoint(path)
    _check_mcore_tensors(reader, build_plan(cfg), path)
    return path, meta, cfg, reader


def _check_mcore_tensors(reader: DistCheckpoint, plan: WeightPlan, path: Path) -> None:
    for key, shape in plan.global_shapes().items():
        md = reader.tensor_meta(key)
        if md is None:
            raise ConvertError(f"{path} lacks the tensor {key}: it does not hold the {plan.cfg.family} model its "
                               f"metadata describes")
        stored = tuple(md.size)
        if key in _VOCAB_KEYS:  # any padding is fine, as long as the real vocabulary is there
            ok = stored[1:] == shape[1:] and stored[0] >= plan.cfg.vocab_size
        else:
            ok = stored == shape
        if not ok:
            raise ConvertError(f"{path}: {key} has shape {stored}, the checkpoint's model config says {shape}")


# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def staged_output(output: Path, overwrite: bool, inputs: Tuple[Path, ...]) -> Iterator[Path]:
    """A fresh temporary directory beside ``output``, renamed to ``output`` when the block succeeds and removed
    when it fails. An existing ``output`` (other than an empty directory) is refused unless ``overwrite``."""
    output = Path(output).absolute()
    for src in inputs:
        src = Path(src).resolve()
        if output.resolve() == src or src in output.resolve().parents or output.resolve() in src.parents:
            raise ConvertError(f"--output {output} overlaps --input {src}: write the conversion somewhere else")
    exists = output.exists() and not (output.is_dir() and not any(output.iterdir()))
    if exists and not overwrite:
        raise OutputExistsError(f"{output} already exists: pass --overwrite to replace it, or pick another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = output.parent / f".{output.name}.old-{os.getpid()}"
    if output.exists():
        output.rename(old)
    tmp.rename(output)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ConvertError(f"the output needs about {human_bytes(needed)} and {directory} has {human_bytes(free)} "
                           f"free: free some space or write elsewhere")


def _target_dtype(opts: Options, source: torch.dtype) -> torch.dtype:
    if opts.dtype is None:
        return source
    if opts.dtype not in DTYPES:
        raise ConvertError(f"--dtype {opts.dtype} is not one of: {', '.join(DTYPES)}")
    return DTYPES[opts.dtype]


def write_mcore(out: Path, plan: WeightPlan, rows, opts: Options, label: str,
                prefix: str = dist_io.KEY_PREFIX) -> Tuple[int, int, float]:
    """Every tensor of ``plan`` from ``rows`` into a torch_dist checkpoint in ``out``, keys under ``prefix``
    (``"model."`` for NeMo); (tensors, bytes, seconds)."""
    pieces = [Piece(e.mcore, a, b, _target_dtype(opts, rows.dtype(e.mcore)), plan.num_layers)
              for e in plan.entries for a, b in rows.blocks(e.mcore, opts.block_bytes)]
    total = sum(p.nbytes for p in pieces)
    _check_space(out, total)
    progress = Progress(label, total, len(plan.entries), quiet=opts.quiet)

    def produce(piece: Piece) -> torch.Tensor:
        data = rows.read(piece.tensor, piece.start, piece.stop).to(piece.dtype)
        progress.advance(piece.nbytes, items=int(piece.stop == piece.tensor.shape[0]))
        return data

    dist_io.write_checkpoint(out, pieces, plan.extra_state_keys(), produce, prefix)
    return len(plan.entries), total, progress.finish()


def write_hf_weights(out: Path, plan: WeightPlan, rows, opts: Options, max_shard: str, label: str):
    """Every HF tensor of ``plan`` (through the inverse row maps) into safetensors shards in ``out``;
    returns (tensors, bytes, seconds, dtype of the embedding)."""
    segments = plan.hf_segments()
    tensors = [hf_io.OutTensor(t.name, t.shape, _target_dtype(opts, rows.dtype(segments[t.name][0][0])))
               for t in plan.hf_tensors()]
    shards = hf_io.plan_shards(tensors, _parse_size(max_shard))
    total = sum(t.nbytes for t in tensors)
    _check_space(out, total)
    progress = Progress(label, total, len(tensors), quiet=opts.quiet)
    for file, group in shards:
        writer = hf_io.SafetensorsWriter(out / file, group)
        try:
            for t in group:
                row_bytes = t.nbytes // t.shape[0]
                for a, b in row_blocks(t.shape[0], row_bytes, opts.block_bytes):
                    progress.advance(writer.write(t.name, _hf_rows(segments[t.name], a, b, rows).to(t.dtype)))
                progress.advance(0, items=1)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    hf_io.write_index(out, shards)
    return len(tensors), total, progress.finish(), tensors[0].dtype


def _hf_rows(pairs, start: int, stop: int, rows) -> torch.Tensor:
    """Rows [start, stop) of one HF tensor, cut from the Megatron-Core tensors its segments name."""
    parts = []
    for mcore, seg in pairs:
        lo, hi = max(start, seg.hf_row), min(stop, seg.hf_row + seg.rows)
        if lo < hi:
            first = seg.mcore_row + lo - seg.hf_row
            parts.append(rows.read(mcore, first, first + hi - lo))
    if sum(p.shape[0] for p in parts) != stop - start:
        raise AssertionError(f"row map does not cover rows {start}:{stop}")
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _parse_size(text: str) -> int:
    """``5GB`` / ``500MB`` / ``200KB`` / ``1024`` -> bytes (decimal units, as transformers' max_shard_size)."""
    units = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}
    text = str(text).strip().upper()
    for unit, scale in units.items():
        if text.endswith(unit) and text[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(text[: -len(unit)]) * scale)
    if text.isdigit():
        return int(text)
    raise ConvertError(f"--max-shard-size {text!r} is not a size like 5GB, 500MB or 200KB")
