"""Writers: a ``Source``'s rows into each target format, under a staged (temporary) directory.

- ``write_hf``: safetensors shards through the inverse row maps, config.json, generation_config.json, tokenizer;
- ``write_mcore``: a Megatron-Core checkpoint in Megatron-LM's save-folder layout, which both ``octo`` and
  Megatron-LM's ``--load`` read::

      OUTPUT/latest_checkpointed_iteration.txt   "release" (converted weights, as Megatron-LM's own converters write)
      OUTPUT/release/                            torch_dist tensors, common.pt (Megatron-LM's args,
                                                 checkpoint_version, iteration), octo_checkpoint.json, hf_assets/

- the NeMo writer is ``convert.nemo``.

Outputs are written under a temporary sibling name and renamed into place only when complete (and verified, with
``verify=True``); a failure removes the temporary directory, so nothing half-written is left under the output name.
In memory at a time: a row block or two (``block_bytes``) and the reader's chunk cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch

from megatron_octo.config.schema import ModelConfig
from megatron_octo.convert import dist_io, hf_io, megatron_lm
from megatron_octo.convert.dist_io import Piece
from megatron_octo.convert.errors import ConvertError
from megatron_octo.convert.layout import WeightPlan, build_plan, check_layout, row_blocks
from megatron_octo.convert.options import HF_ASSETS, Options, parse_size, target_dtype
from megatron_octo.convert.progress import Progress, human_bytes
from megatron_octo.utils.dtypes import HF_DTYPE_NAMES
from megatron_octo.utils.io import OutputExistsError, atomic_write_text, remove_stale_temps

RELEASE = "release"


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
    remove_stale_temps(output)  # left by a killed earlier conversion to this output
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
        raise ConvertError(
            f"the output needs about {human_bytes(needed)} and {directory} has {human_bytes(free)} "
            f"free: free some space or write elsewhere"
        )


# --------------------------------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------------------------------


def write_mcore_tensors(
    out: Path,
    plan: WeightPlan,
    rows,
    opts: Options,
    label: str,
    prefix: str = dist_io.KEY_PREFIX,
    common: Optional[dict] = None,
) -> Tuple[int, int, float]:
    """Every tensor of ``plan`` from ``rows`` into a torch_dist checkpoint in ``out``, keys under ``prefix``
    (``"model."`` for NeMo), ``common`` as its common.pt; (tensors, bytes, seconds)."""
    pieces = [
        Piece(e.mcore, a, b, target_dtype(opts, rows.dtype(e.mcore)), plan.num_layers)
        for e in plan.entries
        for a, b in rows.blocks(e.mcore, opts.block_bytes)
    ]
    total = sum(p.nbytes for p in pieces)
    _check_space(out, total)
    progress = Progress(label, total, len(plan.entries), quiet=opts.quiet)

    def produce(piece: Piece) -> torch.Tensor:
        data = rows.read(piece.tensor, piece.start, piece.stop).to(piece.dtype)
        progress.advance(piece.nbytes, items=int(piece.stop == piece.tensor.shape[0]))
        return data

    dist_io.write_checkpoint(out, pieces, plan.extra_state_keys(), produce, prefix, common=common)
    return len(plan.entries), total, progress.finish()


def write_hf_tensors(out: Path, plan: WeightPlan, rows, opts: Options, max_shard: str, label: str):
    """Every HF tensor of ``plan`` (through the inverse row maps) into safetensors shards in ``out``;
    returns (tensors, bytes, seconds, dtype of the embedding)."""
    segments = plan.hf_segments()
    tensors = [
        hf_io.OutTensor(t.name, t.shape, target_dtype(opts, rows.dtype(segments[t.name][0][0])))
        for t in plan.hf_tensors()
    ]
    shards = hf_io.plan_shards(tensors, parse_size(max_shard))
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


def output_dtype(opts: Options, src, plan: WeightPlan) -> torch.dtype:
    """The dtype the output's embedding (and, unless mixed, every tensor) is written in."""
    return target_dtype(opts, src.rows.dtype(plan.entries[0].mcore))


def family_of(cfg: ModelConfig):
    from megatron_octo.models import get_family

    try:
        return get_family(cfg.family)
    except ValueError as exc:
        raise ConvertError(str(exc)) from None


# --------------------------------------------------------------------------------------------------------------------
# Files beside the tensors
# --------------------------------------------------------------------------------------------------------------------


def write_hf_assets(src, dtype: torch.dtype, dst: Path) -> None:
    """``dst``: config.json (the source's, else derived from its ModelConfig: it records the unpadded vocabulary)
    and generation_config.json, for the way back to Hugging Face; the source's tokenizer files."""
    dst.mkdir()
    for name in (hf_io.CONFIG, hf_io.GENERATION_CONFIG):
        if src.assets is not None and (src.assets / name).is_file():
            shutil.copy2(src.assets / name, dst / name)
    if not (dst / hf_io.CONFIG).is_file():
        derived = family_of(src.cfg).to_hf(src.cfg, dtype=HF_DTYPE_NAMES[dtype])
        (dst / hf_io.CONFIG).write_text(json.dumps(derived, indent=2) + "\n")
    if src.tokenizer is not None:
        hf_io.copy_tokenizer(src.tokenizer, dst)


def write_hf_files(out: Path, derived: dict, assets: Optional[Path], tokenizer: Optional[Path]) -> None:
    """config.json (the original one merged with the derived fields), generation_config.json and the tokenizer
    files of an HF export."""
    original = None
    if assets is not None and (assets / hf_io.CONFIG).is_file():
        original = hf_io.read_json(assets / hf_io.CONFIG, "")
    config = hf_io.merged_config(original, derived, hf_io.token_ids(tokenizer))
    (out / hf_io.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if assets is not None and (assets / hf_io.GENERATION_CONFIG).is_file():
        shutil.copy2(assets / hf_io.GENERATION_CONFIG, out / hf_io.GENERATION_CONFIG)
    else:  # what transformers' GenerationConfig.from_model_config writes, without importing transformers
        ids = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
        text = json.dumps({"_from_model_config": True, **ids}, indent=2) + "\n"
        (out / hf_io.GENERATION_CONFIG).write_text(text)
    if tokenizer is not None:
        hf_io.copy_tokenizer(tokenizer, out)


# --------------------------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------------------------


def write_hf(src, out: Path, opts: Options, max_shard_size: str) -> Tuple[int, int, float, list]:
    """A Hugging Face model directory in ``out``: safetensors shards (with an index when several), config.json,
    generation_config.json, tokenizer files; (tensors, bytes, seconds, notes)."""
    family = family_of(src.cfg)
    plan = build_plan(src.cfg)
    tensors, nbytes, seconds, dtype = write_hf_tensors(out, plan, src.rows, opts, max_shard_size, f"{src.kind} -> hf")
    write_hf_files(out, family.to_hf(src.cfg, dtype=HF_DTYPE_NAMES[dtype]), src.assets, src.tokenizer)
    notes = [] if src.tokenizer is not None else ["no tokenizer files found: pass --tokenizer DIR to include them"]
    return tensors, nbytes, seconds, notes


def mcore_checkpoint_dir(out: Path) -> Path:
    """Where ``write_mcore`` puts the checkpoint inside its output directory."""
    return Path(out) / RELEASE


def write_mcore(src, out: Path, opts: Options, tp: int, pp: int) -> Tuple[int, int, float, list]:
    """A Megatron-Core model checkpoint for ``tp`` x ``pp`` in ``out`` (layout in the module docstring): the
    vocabulary padded for the layout, our metadata with the lineage, Megatron-LM's common state and tracker, the
    HF config and tokenizer in hf_assets; (tensors, bytes, seconds, notes)."""
    from megatron_octo.training.checkpoint import META_FILE, CheckpointMeta

    check_layout(src.cfg, tp, pp)
    plan = build_plan(src.cfg, tp)
    ckpt = mcore_checkpoint_dir(out)
    ckpt.mkdir()
    common = megatron_lm.common_state(src.cfg, tp=tp, pp=pp, iteration=0)
    tensors, nbytes, seconds = write_mcore_tensors(ckpt, plan, src.rows, opts, f"{src.kind} -> mcore", common=common)
    layout = {"tp": tp, "pp": pp, "cp": 1, "dp": 1, "distributed_optimizer": False}
    meta = CheckpointMeta(step=0, tokens=0, kind="model", layout=layout, model=asdict(src.cfg), lineage=src.lineage)
    atomic_write_text(ckpt / META_FILE, json.dumps(asdict(meta), indent=2) + "\n")
    write_hf_assets(src, output_dtype(opts, src, plan), ckpt / HF_ASSETS)
    megatron_lm.write_tracker(out, RELEASE)
    return tensors, nbytes, seconds, []
