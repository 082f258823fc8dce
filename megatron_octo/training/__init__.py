"""Training: one stage of a recipe on Megatron-Core, under torchrun or in a single process."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from megatron_octo.config.loader import load_recipe
from megatron_octo.config.schema import RecipeConfig
from megatron_octo.training.stage import RUN_FILES, TRAIN_STAGE, check_run_dir, run_stage

__all__ = ["RUN_FILES", "TRAIN_STAGE", "check_run_dir", "train", "train_from_args"]


def train(recipe: RecipeConfig, run_dir: Path, overwrite: bool = False) -> Dict[str, Any]:
    """Run one training stage in this process (one rank of a torchrun world, or a world of one)."""
    from megatron_octo.training.loop import prepare_training

    return run_stage(
        TRAIN_STAGE, recipe, Path(run_dir), overwrite, lambda ctx: prepare_training(recipe, Path(run_dir), ctx)
    )


def train_from_args(
    recipe_name: str, overrides: Sequence[str], run_dir: str, overwrite: bool, override_schedule: bool = False
) -> Dict[str, Any]:
    """``octo train``: resolve the recipe, then train."""
    if override_schedule:
        overrides = list(overrides) + ["checkpoint.override_schedule=true"]
    return train(load_recipe(recipe_name, overrides), Path(run_dir), overwrite)
