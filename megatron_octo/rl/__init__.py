"""Reinforcement learning on math: GRPO on Megatron-Core with a rollout engine (``octo rl``), the rule-based reward
(``megatron_octo.rl.reward``) and the advantage / loss functions (``megatron_octo.rl.algorithms``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

COLLECTIVE_TIMEOUT_S = 4 * 3600
"""How long a rank may wait in a collective: while a rollout rank generates (or rank 0 validates), the other ranks
of its group wait in a broadcast, for much longer than training's 10 minutes at 4,096-8,192-token responses."""
RL_RUN_FILES = ("init", "validation", "hf", "rl_summary.json", "critic_checkpoints", "samples.jsonl")
"""Outputs of ``octo rl`` besides those of ``octo train`` (``training.RUN_FILES``)."""


def rl(recipe, run_dir: Path, overwrite: bool = False, reward_fn=None) -> Dict[str, Any]:
    """Run an RL stage in this process (one rank of a torchrun world, or a world of one); rank 0 writes
    ``rl_summary.json`` and, once every step is done, the final policy as a Hugging Face model in ``RUN_DIR/hf``."""
    import torch.distributed as dist

    from megatron_octo import parallel
    from megatron_octo.config.validate import data_parallel_size, validate_rl
    from megatron_octo.rl.loop import run_rl
    from megatron_octo.training import _prepare_run_dir, check_run_dir
    from megatron_octo.utils.io import atomic_write_text

    # train.global_batch is not RL's batch (rl.prompts_per_step x rl.rollout.n is): check the layout and RL's own
    # geometry here, before any process group exists
    validate_rl(recipe, data_parallel_size(recipe.parallel, int(os.environ.get("WORLD_SIZE", "1"))))
    check_run_dir(run_dir, overwrite)
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed, timeout_s=COLLECTIVE_TIMEOUT_S)
    try:
        if ctx.is_main:
            if overwrite:
                for name in RL_RUN_FILES:
                    path = run_dir / name
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            _prepare_run_dir(run_dir, recipe, overwrite)
        dist.barrier()
        summary = run_rl(recipe, run_dir, ctx, reward_fn=reward_fn)
        if ctx.is_main:
            finished = summary["start_step"] + summary["steps_run"] == summary["steps"]
            if finished and summary["steps_run"] and recipe.checkpoint.save:
                summary["hf_dir"] = str(export_policy(run_dir, recipe.rl.prompts.tokenizer or recipe.data.tokenizer))
            atomic_write_text(run_dir / "rl_summary.json", json.dumps(summary, indent=2) + "\n")
        dist.barrier()
        return summary
    finally:
        parallel.destroy(ctx)


def export_policy(run_dir: Path, tokenizer_dir: Optional[str] = None) -> Path:
    """The newest checkpoint of ``run_dir`` as a Hugging Face model in ``RUN_DIR/hf`` (replacing an older export)."""
    from megatron_octo.convert import mcore_to_hf
    from megatron_octo.rl.setup import INIT_DIR

    out = run_dir / "hf"
    from megatron_octo.convert.options import HF_ASSETS
    from megatron_octo.training.checkpoint import resolve

    init = run_dir / INIT_DIR
    assets = resolve(str(init)) / HF_ASSETS if init.is_dir() else None
    tokenizer = tokenizer_dir or (str(assets) if assets is not None and assets.is_dir() else None)
    # the checkpoint itself, not the run directory: the export lies inside the run directory, and conversion
    # refuses an output inside its input
    mcore_to_hf(str(resolve(str(run_dir))), str(out), tokenizer_dir=tokenizer, overwrite=True, quiet=True)
    return out


def rl_from_args(recipe_name: str, overrides: Sequence[str], run_dir: str, overwrite: bool) -> Dict[str, Any]:
    """``octo rl``: resolve the recipe, then run it."""
    from megatron_octo.config.loader import load_recipe

    return rl(load_recipe(recipe_name, overrides), Path(run_dir), overwrite)
