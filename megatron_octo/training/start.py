"""Where a stage's weights come from when they are not one of our checkpoints: a Hugging Face directory or Hub model
ID, or a Megatron-LM checkpoint in any format, converted once into ``RUN_DIR/init`` (used by ``training.resume`` for
``checkpoint.load`` and by ``rl.setup`` for ``rl.init``).

``locate`` says what a starting point is without writing anything (so a stage can refuse a bad one, or find its
tokenizer, before it touches the run directory); ``prepare_source`` converts it when it is not ours. A conversion is
kept while ``RUN_DIR/init`` records (in its lineage) the same source; a start that now names another source (the
setting changed before the first checkpoint, a Megatron-LM tracker moved on) is converted again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch.distributed as dist

from megatron_octo.training import checkpoint as ckpt

INIT_DIR = "init"
"""Where a run keeps the conversion of a starting point that is not one of our checkpoints (RUN_DIR/init)."""

OURS, HF, MEGATRON_LM = "ours", "hf", "megatron-lm"


@dataclass(frozen=True)
class Origin:
    """A starting point, located: ``kind`` (``OURS`` / ``HF`` / ``MEGATRON_LM``) and ``path``, the directory the
    weights are read from (our checkpoint directory, the local HF model directory or Hub snapshot, the Megatron-LM
    checkpoint directory the save folder's tracker names)."""

    kind: str
    path: Path


def locate(spec: str) -> Origin:
    """What ``spec`` names (reads only; a Hub model ID is fetched into huggingface_hub's cache): one of our
    checkpoints (``DIR``, a run directory, ``DIR:STEP``), a Hugging Face model directory or Hub ID, or a Megatron-LM
    checkpoint (save folder, ``iter_N`` / ``release`` folder, ``DIR:STEP``). A one-line CheckpointError (or the
    ConvertError of a broken Megatron-LM save folder) when it names none of them."""
    from megatron_octo.convert import hf_io, megatron_lm
    from megatron_octo.convert.sources import hf_dir
    from megatron_octo.utils.hub import is_hub_id

    try:
        return Origin(OURS, ckpt.resolve(spec))
    except ckpt.CheckpointError:
        if is_hub_id(spec) or (Path(spec) / hf_io.CONFIG).is_file():
            return Origin(HF, hf_dir(spec))
        found = megatron_lm.locate(spec)
        if found is None:
            raise
        return Origin(MEGATRON_LM, found)


def converted_from(init: Path) -> Optional[str]:
    """The source (resolved path) the conversion in ``init`` was made from, or None when unreadable."""
    try:  # a conversion's output is a Megatron-LM save folder (tracker + release/) with our metadata
        lineage = ckpt.read_meta(ckpt.resolve(str(init))).lineage
    except (ckpt.CheckpointError, ValueError, TypeError):
        return None
    return lineage[-1]["path"] if lineage else None


def prepare_source(
    spec: str, run_dir: Path, *, tp: int, pp: int, divisible: int, log: Callable[[str], None] = print
) -> Path:
    """One of our checkpoint directories for ``spec`` (collective over all ranks): ours, resolved; a Hugging Face
    model or a Megatron-LM checkpoint (see ``locate``), converted by global rank 0 into ``RUN_DIR/init`` for
    ``tp`` x ``pp``, once: a resumed or restarted run finds it there, unless it was made from another source."""
    origin = locate(spec)
    if origin.kind == OURS:
        return origin.path
    init = Path(run_dir) / INIT_DIR
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0:
        was = converted_from(init) if init.exists() else None
        if was is None or was != str(origin.path.resolve()):
            from megatron_octo.convert.api import convert

            if init.exists():
                log(f"[octo] {init} was converted from {was or 'an unknown source'}, not {spec}: converting again")
            log(f"[octo] converting {spec} ({origin.kind}) to Megatron-Core in {init}")
            fmt = "hf" if origin.kind == HF else "mcore"
            convert(
                fmt,
                "mcore",
                str(origin.path),
                init,
                tp=tp,
                pp=pp,
                make_vocab_size_divisible_by=divisible,
                quiet=True,
                overwrite=init.exists(),
            )
    if dist.is_initialized():
        dist.barrier()
    return ckpt.resolve(str(init))
