"""Reinforcement learning on math: GRPO on Megatron-Core with a rollout engine (``octo rl``), the rule-based reward
(``megatron_octo.rl.reward``) and the advantage / loss functions (``megatron_octo.rl.algorithms``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence


def rl(recipe, run_dir: Path, overwrite: bool = False, reward_fn=None) -> Dict[str, Any]:
    """Run an RL stage in this process (one rank of a torchrun world, or a world of one); rank 0 writes
    ``rl_summary.json`` and, once every step is done, the final policy as a Hugging Face model in ``RUN_DIR/hf``."""
    from megatron_octo.rl.loop import RL_STAGE, prepare_rl
    from megatron_octo.training.stage import run_stage

    run_dir = Path(run_dir)

    def finish(summary: Dict[str, Any]) -> None:
        finished = summary["start_step"] + summary["steps_run"] == summary["steps"]
        if finished and summary["steps_run"] and recipe.checkpoint.save:
            summary["hf_dir"] = str(export_policy(run_dir, recipe.rl.prompts.tokenizer or recipe.data.tokenizer))

    return run_stage(
        RL_STAGE, recipe, run_dir, overwrite, lambda ctx: prepare_rl(recipe, run_dir, ctx, reward_fn), finish
    )


def export_policy(run_dir: Path, tokenizer_dir: Optional[str] = None) -> Path:
    """The newest checkpoint of ``run_dir`` as a Hugging Face model in ``RUN_DIR/hf`` (replacing an older export)."""
    from megatron_octo.convert import mcore_to_hf
    from megatron_octo.training.checkpoint import CheckpointError, resolve
    from megatron_octo.training.start import INIT_DIR

    out = run_dir / "hf"
    try:  # the tokenizer kept with the conversion of an rl.init that is not ours (a save folder: tracker + release/)
        assets: Optional[Path] = resolve(str(run_dir / INIT_DIR)) / "hf_assets"
    except CheckpointError:
        assets = None
    tokenizer = tokenizer_dir or (str(assets) if assets is not None and assets.is_dir() else None)
    # the checkpoint itself, not the run directory that also holds the output
    mcore_to_hf(str(resolve(str(run_dir))), str(out), tokenizer_dir=tokenizer, overwrite=True, quiet=True)
    return out


def rl_from_args(recipe_name: str, overrides: Sequence[str], run_dir: str, overwrite: bool) -> Dict[str, Any]:
    """``octo rl``: resolve the recipe, then run it."""
    from megatron_octo.config.loader import load_recipe

    return rl(load_recipe(recipe_name, overrides), Path(run_dir), overwrite)
