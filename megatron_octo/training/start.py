"""Where a stage's weights come from when they are not one of our checkpoints: a Hugging Face directory or Hub model
ID, or a Megatron-LM checkpoint in any format, converted once into ``RUN_DIR/init`` (used by ``training.resume`` for
``checkpoint.load`` and by ``rl.setup`` for ``rl.init``)."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from megatron_octo.training import checkpoint as ckpt

INIT_DIR = "init"
"""Where a run keeps the conversion of a starting point that is not one of our checkpoints (RUN_DIR/init)."""


def prepare_source(spec: str, run_dir: Path, *, tp: int, pp: int, divisible: int) -> Path:
    """One of our checkpoint directories for ``spec`` (collective over all ranks): ours, resolved; a Hugging Face
    directory or Hub model ID, or a Megatron-LM checkpoint (any format), converted once by global rank 0 into
    ``RUN_DIR/init`` for ``tp`` x ``pp`` (a resumed or restarted run finds it there)."""
    from megatron_octo.convert import hf_io, megatron_lm
    from megatron_octo.utils.hub import is_hub_id

    try:
        return ckpt.resolve(spec)
    except ckpt.CheckpointError:
        if is_hub_id(spec) or (Path(spec) / hf_io.CONFIG).is_file():
            kind = "hf"
        elif megatron_lm.locate(spec) is not None:
            kind = "mcore"
        else:
            raise
    init = Path(run_dir) / INIT_DIR
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0 and not init.exists():
        from megatron_octo.convert.api import convert

        convert(kind, "mcore", spec, init, tp=tp, pp=pp, make_vocab_size_divisible_by=divisible, quiet=True)
    if dist.is_initialized():
        dist.barrier()
    return ckpt.resolve(str(init))
