"""Where a stage starts: fresh, resumed from its own run directory, branched from another run, or from weights.

Precedence: a complete checkpoint in the run directory (resume) wins; otherwise ``checkpoint.branch_from``;
otherwise ``checkpoint.load``; otherwise the initialization of ``train.init``.

Resume never trusts the newest checkpoint blindly: its files are checked first (metadata readable, every shard file
present and as long as the index says, ``common.pt`` loadable). An unusable one is set aside as ``iter_N.corrupt``
(kept for inspection, no longer a resume candidate) and the next newest is tried, with one line saying which and
why; only when none is usable is it an error.

After any load the LR scheduler is stepped to the start step, which rewrites every parameter group's LR from
*this* recipe's schedule: the LR stored in the optimizer state never survives (a known Megatron trap).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from megatron_octo.config.schema import RecipeConfig
from megatron_octo.training import checkpoint as ckpt
from megatron_octo.training.start import prepare_source


@dataclass
class Start:
    """The step a stage starts at and the checkpoints it descends from."""

    step: int = 0
    tokens: int = 0
    """Tokens this stage had consumed at ``step`` (from the checkpoint's metadata on resume)."""
    lineage: List[dict] = field(default_factory=list)
    source: Optional[str] = None
    """Human-readable description of what was loaded (None for a fresh start)."""


def schedule_params(recipe: RecipeConfig, iters: int) -> Dict:
    """The LR schedule as stored in a checkpoint and compared on resume."""
    s = recipe.schedule
    return {
        "style": s.style,
        "lr": s.lr,
        "min_lr": s.min_lr,
        "warmup_iters": s.warmup_iters,
        "decay_iters": s.decay_iters if s.decay_iters is not None else iters,
        "iters": iters,
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
    return meta.lineage + [
        {"path": str(path.resolve()), "step": meta.step, "tokens": meta.tokens, "recipe": meta.recipe}
    ]


def checkpoint_problem(ckpt_dir: Path) -> Optional[str]:
    """Why the complete checkpoint ``ckpt_dir`` cannot be loaded, or None when its files look whole.

    Cheap file-level checks (no tensor is read): the metadata parses, Megatron-Core's ``metadata.json`` and
    torch.distributed.checkpoint's ``.metadata`` are there and readable, every shard file the index names exists
    and is at least as long as the index says, and ``common.pt`` unpickles."""
    import torch
    from torch.distributed.checkpoint import FileSystemReader

    ckpt_dir = Path(ckpt_dir)
    try:
        ckpt.read_meta(ckpt_dir)
    except (ckpt.CheckpointError, ValueError, TypeError) as exc:
        return f"{ckpt.META_FILE} is unreadable ({str(exc).splitlines()[0][:120]})"
    for name in ("metadata.json", ".metadata", "common.pt"):
        if not (ckpt_dir / name).is_file():
            return f"{name} is missing"
    try:
        json.loads((ckpt_dir / "metadata.json").read_text())
        index = FileSystemReader(str(ckpt_dir)).read_metadata()
    except Exception as exc:  # any unpickling / decoding failure means the same: unreadable
        return f"its index (.metadata / metadata.json) is unreadable ({type(exc).__name__})"
    needed: Dict[str, int] = {}
    for info in index.storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, length in sorted(needed.items()):
        path = ckpt_dir / name
        if not path.is_file():
            return f"shard file {name} is missing"
        if os.path.getsize(path) < length:
            return f"shard file {name} is truncated ({os.path.getsize(path)} of {length} bytes)"
    try:
        torch.load(ckpt_dir / "common.pt", map_location="cpu", weights_only=False)
    except Exception as exc:
        return f"common.pt is unreadable ({type(exc).__name__})"
    return None


def usable_checkpoint(
    root: Path, log: Callable[[str], None] = print, set_aside: bool = True
) -> Tuple[Optional[Path], List[Tuple[Path, str]]]:
    """The newest complete checkpoint under ``root`` whose files are whole, and the (path, reason) of each newer
    one passed over. When one is found and ``set_aside``, each passed-over one is renamed ``iter_N.corrupt`` (so
    that saving and pruning no longer count it) and ``log`` says so; when none is, nothing is renamed. Call it on
    one rank only."""
    skipped: List[Tuple[Path, str]] = []
    for candidate in reversed(ckpt.complete_checkpoints(root)):
        problem = checkpoint_problem(candidate)
        if problem is None:
            if set_aside:
                for bad, why in skipped:
                    _set_aside(bad, why, log)
            return candidate, skipped
        skipped.append((candidate, problem))
    return None, skipped


def _set_aside(bad: Path, why: str, log: Callable[[str], None]) -> None:
    aside, n = bad.with_name(bad.name + ".corrupt"), 1
    while aside.exists():
        n += 1
        aside = bad.with_name(f"{bad.name}.corrupt-{n}")
    try:
        bad.rename(aside)
        log(f"[octo] {bad} is unusable ({why}): set aside as {aside.name}")
    except OSError as exc:
        log(f"[octo] {bad} is unusable ({why}) and could not be set aside ({exc.strerror})")


def _own_checkpoint(run_dir: Path, ctx, log) -> Tuple[Optional[Path], List[Tuple[Path, str]]]:
    """Rank 0 picks the newest usable checkpoint of the run; every rank gets it and the unusable newer ones."""
    import torch.distributed as dist

    root = Path(run_dir) / "checkpoints"
    choice: List[object] = [None, []]
    if ctx is None or ctx.is_main:
        choice = list(usable_checkpoint(root, log, set_aside=False))
    if ctx is not None:
        dist.broadcast_object_list(choice, src=0)
    found: Optional[Path] = choice[0]  # type: ignore[assignment]  # broadcast_object_list is untyped
    skipped: List[Tuple[Path, str]] = choice[1]  # type: ignore[assignment]
    if found is None and skipped:
        reasons = "; ".join(f"{p.name}: {why}" for p, why in skipped)
        raise ckpt.CheckpointError(
            f"no usable checkpoint under {root} ({reasons}): restore one from a backup, or start over with --overwrite"
        )
    return found, skipped


def restore(
    recipe: RecipeConfig, run_dir: Path, parts, iters: int, ctx=None, log: Callable[[str], None] = print
) -> Start:
    """Load whatever the stage starts from into ``parts`` (collective); return the start. ``ctx`` (the
    ParallelContext): rank 0 checks the run's own checkpoints and tells the others which one to load; unusable
    newer ones are set aside only once the resume has loaded (a refused resume changes nothing)."""
    own, skipped = _own_checkpoint(run_dir, ctx, log)
    c = recipe.checkpoint
    if own is not None:
        check_schedule(ckpt.read_meta(own).schedule, schedule_params(recipe, iters), own, c.override_schedule)
        meta = ckpt.load(own, parts, with_optimizer=True)
        start = Start(
            step=meta.step, tokens=meta.tokens, lineage=meta.lineage, source=f"resumed from {own} (step {meta.step})"
        )
        if (ctx is None or ctx.is_main) and skipped:
            for bad, why in skipped:
                _set_aside(bad, why, log)
            tracker = own.parent / ckpt.LATEST_FILE  # Megatron-LM's pointer must not name a set-aside checkpoint
            if tracker.is_file():
                from megatron_octo.utils.io import atomic_write_text

                atomic_write_text(tracker, f"{meta.step}\n")
    elif c.branch_from:
        source = ckpt.resolve(c.branch_from)
        _refuse_own_run(source, run_dir)
        meta = ckpt.load(source, parts, with_optimizer=True)
        start = Start(lineage=_ancestry(meta, source), source=f"branched from {source} (step {meta.step})")
    elif c.load:  # ours, or an HF / Megatron-LM model converted once into RUN_DIR/init
        source = prepare_source(
            c.load,
            run_dir,
            tp=recipe.parallel.tp,
            pp=recipe.parallel.pp,
            divisible=recipe.model.make_vocab_size_divisible_by,
            log=log,
        )
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
