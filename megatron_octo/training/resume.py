"""Where a stage starts: fresh, resumed from its own run directory, branched from another run, or from weights.

Precedence: a complete checkpoint in the run directory (resume) wins; otherwise ``checkpoint.branch_from``;
otherwise ``checkpoint.load``; otherwise the initialization of ``train.init``.

After any load the LR scheduler is stepped to the start step, which rewrites every parameter group's LR from
*this* recipe's schedule: the LR stored in the optimizer state never survives (a known Megatron trap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from megatron_octo.config.schema import RecipeConfig
from megatron_octo.training import checkpoint as ckpt
from megatron_octo.training.start import prepare_source


@dataclass
class Start:
    """The step a stage starts at and the checkpoints it descends from."""

    step: int = 0
    lineage: List[dict] = field(default_factory=list)
    source: Optional[str] = None
    """Human-readable description of what was loaded (None for a fresh start)."""


def schedule_params(recipe: RecipeConfig, iters: int) -> Dict:
    """The LR schedule as stored in a checkpoint and compared on resume."""
    s = recipe.schedule
    return {
        "style": s.style, "lr": s.lr, "min_lr": s.min_lr, "warmup_iters": s.warmup_iters,
        "decay_iters": s.decay_iters if s.decay_iters is not None else iters, "iters": iters,
    }


def check_schedule(saved: Dict, wanted: Dict, ckpt_dir: Path, override: bool) -> None:
    """Refuse to resume under a different schedule unless ``override``."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs recipe {wanted[k]!r}" for k in wanted if saved.get(k) != wanted[k]]
    if diffs and not override:
        raise ckpt.CheckpointError(
            f"schedule differs from the checkpoint {ckpt_dir} ({'; '.join(diffs)}): pass --override-schedule "
            f"(checkpoint.override_schedule=true) to use the recipe's"
        )


def _ancestry(meta: ckpt.CheckpointMeta, path: Path) -> List[dict]:
    return meta.lineage + [{"path": str(path.resolve()), "step": meta.step, "tokens": meta.tokens,
                            "recipe": meta.recipe}]


def restore(recipe: RecipeConfig, run_dir: Path, parts, iters: int) -> Start:
    """Load whatever the stage starts from into ``parts`` (collective); return the start."""
    own = ckpt.latest_checkpoint(Path(run_dir) / "checkpoints")
    c = recipe.checkpoint
    if own is not None:
        check_schedule(ckpt.read_meta(own).schedule, schedule_params(recipe, iters), own, c.override_schedule)
        meta = ckpt.load(own, parts, with_optimizer=True)
        start = Start(step=meta.step, lineage=meta.lineage, source=f"resumed from {own} (step {meta.step})")
    elif c.branch_from:
        source = ckpt.resolve(c.branch_from)
        _refuse_own_run(source, run_dir)
        meta = ckpt.load(source, parts, with_optimizer=True)
        start = Start(lineage=_ancestry(meta, source), source=f"branched from {source} (step {meta.step})")
    elif c.load:  # ours, or an HF / Megatron-LM model converted once into RUN_DIR/init
        source = prepare_source(c.load, run_dir, tp=recipe.parallel.tp, pp=recipe.parallel.pp,
                                     divisible=recipe.model.make_vocab_size_divisible_by)
        meta = ckpt.load(source, parts, with_optimizer=False)
        parts.optimizer.reload_model_params()  # main (fp32) params take the loaded weights
        start = Start(lineage=_ancestry(meta, source), source=f"weights from {source} (step {meta.step})")
    else:
        return Start()
    parts.scheduler.step(increment=start.step)
    return start


def _refuse_own_run(source: Path, run_dir: Path) -> None:
    if Path(run_dir).resolve() in source.resolve().parents:
        raise ckpt.CheckpointError(
            f"checkpoint.branch_from={source} lies inside this run's directory {run_dir}: branch into a new --run-dir"
        )
