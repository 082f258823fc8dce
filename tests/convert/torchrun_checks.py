"""Run by test_parallel.py under torchrun (gloo, TP x PP processes): for each ``--job CKPT TOKENS LOGITS SAVE``,

- build this rank's model as ``octo train`` does (``training.build``: GPTModel stage in Megatron-Core DDP, optimizer)
  and load CKPT with ``training.checkpoint.load`` (what ``checkpoint.load=CKPT`` runs);
- write the logits of the token ids in TOKENS (gathered over TP on the last stage) to LOGITS;
- save the model part of what ``training.checkpoint.save`` saves, with Megatron-Core's ``dist_checkpointing.save``,
  into SAVE (with CKPT's octo_checkpoint.json), so the test can compare Megatron's files with the converter's.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist


def recipe_for(ckpt: Path, tp: int, pp: int):
    from megatron_octo.config.schema import ModelConfig, ParallelConfig, PrecisionConfig, RecipeConfig, TrainConfig
    from megatron_octo.training.checkpoint import read_meta

    return RecipeConfig(model=ModelConfig(**read_meta(ckpt).model), parallel=ParallelConfig(tp=tp, pp=pp),
                        precision=PrecisionConfig(dtype="fp32"), train=TrainConfig(iters=1))


def main(argv=None) -> int:
    warnings.filterwarnings("ignore")
    from megatron.core import dist_checkpointing

    from megatron_octo import parallel
    from megatron_octo.config.schema import ParallelConfig
    from megatron_octo.convert.logits import forward_logits
    from megatron_octo.training import checkpoint
    from megatron_octo.training.build import build

    p = argparse.ArgumentParser()
    p.add_argument("--tp", type=int, required=True)
    p.add_argument("--pp", type=int, required=True)
    p.add_argument("--job", nargs=4, action="append", required=True)
    args = p.parse_args(argv)
    ctx = parallel.initialize(ParallelConfig(tp=args.tp, pp=args.pp), seed=0)
    try:
        for ckpt, tokens, logits_out, save_dir in args.job:
            recipe = recipe_for(Path(ckpt), args.tp, args.pp)
            parts = build(recipe, ctx, iters=1)
            checkpoint.load(Path(ckpt), parts, with_optimizer=False)
            logits = forward_logits(parts.model[0], parts.config, recipe.model, torch.load(tokens), ctx)
            if logits is not None and ctx.tp_rank == 0:
                torch.save(logits, logits_out)
            if ctx.is_main:
                Path(save_dir).mkdir(parents=True)
            dist.barrier()
            dist_checkpointing.save(checkpoint.sharded_state(parts, with_optimizer=False, is_loading=False), save_dir)
            if ctx.is_main:
                meta = json.loads((Path(ckpt) / checkpoint.META_FILE).read_text())
                meta["layout"] = {**meta["layout"], "tp": args.tp, "pp": args.pp}
                (Path(save_dir) / checkpoint.META_FILE).write_text(json.dumps(meta))
            dist.barrier()
    finally:
        parallel.destroy(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
