"""Training: one stage of a recipe on Megatron-Core, under torchrun or in a single process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, Sequence

from megatron_octo.config.loader import load_recipe, to_yaml
from megatron_octo.config.schema import RecipeConfig
from megatron_octo.config.validate import check_world
from megatron_octo.training.checkpoint import latest_checkpoint
from megatron_octo.utils.io import OutputExistsError, atomic_write_text

RUN_FILES = ("metrics.jsonl", "recipe.yaml", "train_summary.json", "tensorboard", "checkpoints")


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse a run directory that holds a run's outputs but no checkpoint to resume from, unless ``overwrite``."""
    if overwrite or latest_checkpoint(run_dir / "checkpoints") is not None:
        return
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing:
        raise OutputExistsError(
            f"run directory {run_dir} already holds a run ({', '.join(existing)}) with no complete checkpoint to "
            f"resume from: pick a new --run-dir or pass --overwrite"
        )


def _prepare_run_dir(run_dir: Path, recipe: RecipeConfig, overwrite: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in RUN_FILES:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    atomic_write_text(run_dir / "recipe.yaml", to_yaml(recipe))


def train(recipe: RecipeConfig, run_dir: Path, overwrite: bool = False) -> Dict[str, float]:
    """Run one training stage in this process (one rank of a torchrun world, or a world of one)."""
    import torch.distributed as dist

    from megatron_octo import parallel
    from megatron_octo.training.loop import run_training

    check_world(recipe, int(os.environ.get("WORLD_SIZE", "1")))
    check_run_dir(run_dir, overwrite)
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed)
    try:
        if ctx.is_main:
            _prepare_run_dir(run_dir, recipe, overwrite)
        dist.barrier()
        summary = run_training(recipe, run_dir, ctx)
        if ctx.is_main:
            atomic_write_text(run_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
        # Leave together: a launcher that kills the other ranks when one exits (srun --kill-on-bad-exit,
        # torchrun) must not cut rank 0 off while it still publishes a checkpoint or writes the summary.
        dist.barrier()
        return summary
    finally:
        parallel.destroy(ctx)


def train_from_args(recipe_name: str, overrides: Sequence[str], run_dir: str, overwrite: bool,
                    override_schedule: bool = False) -> Dict[str, float]:
    """``octo train``: resolve the recipe, then train."""
    if override_schedule:
        overrides = list(overrides) + ["checkpoint.override_schedule=true"]
    return train(load_recipe(recipe_name, overrides), Path(run_dir), overwrite)
