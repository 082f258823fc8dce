"""Run under torchrun: ``tiny-cpu`` with the given overrides takes 2 optimizer steps, syncs its weights into a
transformers rollout engine on every rollout rank (as ``octo rl`` does after an update), takes a third step and
saves a checkpoint (as ``octo train`` does). Nothing runs a forward pass between an update and what reads the
weights, so with ``overlap_param_gather`` the deferred all-gather is still pending at both reads.

Writes OUT/engine_rank{R}.pt (the engine's state dict, on each rollout rank) and OUT/run/checkpoints/iter_0000003.

    torchrun --nproc-per-node N tests/training/torchrun_params.py OUT key=value ...
"""

import os
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist


def main(out: Path, overrides) -> None:
    from megatron_octo import parallel
    from megatron_octo.config.loader import load_recipe
    from megatron_octo.models import get_family
    from megatron_octo.rl.engines import TransformersEngine
    from megatron_octo.rl.sync import WeightSync
    from megatron_octo.training import checkpoint as ckpt
    from megatron_octo.training.build import build
    from megatron_octo.data.loader import step_loader
    from megatron_octo.training.loop import make_dataset, train_step

    if os.environ.get("OCTO_TEST_STALE_PARAMS"):  # the control run of the test: the fix switched off
        from megatron_octo.training import params

        params.make_params_current = lambda chunks: None
    recipe = load_recipe("tiny-cpu", ["train.iters=3", "schedule.warmup_iters=0", "logging.tensorboard=false",
                                      *overrides])
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed)
    try:
        parts = build(recipe, ctx, 3)
        loader = step_loader(make_dataset(recipe), recipe, ctx, 0, 3)
        for step in range(2):
            train_step(step, parts, loader, recipe, ctx)
        engine = None
        if dist.get_rank(ctx.pgs.mp) == 0:  # the rollout rank of this data-parallel replica
            hf_config = get_family(recipe.model.family).to_hf(recipe.model, dtype="float32")
            engine = TransformersEngine(hf_config, SimpleNamespace(pad_token_id=0, eos_token_id=0))
        WeightSync(recipe.model, ctx.pgs.mp, torch.float32)(parts.model, engine)  # what octo rl runs per update
        if engine is not None:
            torch.save(engine.model.state_dict(), out / f"engine_rank{dist.get_rank()}.pt")
        train_step(2, parts, loader, recipe, ctx)
        saver = ckpt.Saver(out / "run" / "checkpoints", keep_last=1, ctx=ctx)
        saver.save(ckpt.CheckpointMeta(step=3, tokens=0, recipe=recipe.name, model=asdict(recipe.model)), parts)
        saver.close()
        loader.close()
        dist.barrier()
    finally:
        parallel.destroy(ctx)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
