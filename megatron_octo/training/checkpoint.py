"""Checkpoints: Megatron-Core ``dist_checkpointing`` (torch_dist format) plus our own metadata.

Layout of a run directory::

    RUN_DIR/checkpoints/iter_0000100/        a complete checkpoint (only complete ones carry this name)
        octo_checkpoint.json                 step, tokens, schedule, layout, lineage (``CheckpointMeta``)
        .metadata, __*.distcp, common.pt ... Megatron-Core / torch.distributed.checkpoint files
    RUN_DIR/checkpoints/iter_0000100.tmp/    a save in progress (ignored, removed by the next save)
    RUN_DIR/checkpoints/latest_checkpointed_iteration.txt   Megatron-LM's pointer, for its tools

A save writes into the ``.tmp`` directory and is renamed into place by rank 0 only after every rank has finished
and the metadata is on disk, so a process killed during a save leaves the previous checkpoint as the newest
complete one. The model is stored as Megatron-Core's sharded state dict (global tensors, any TP/PP layout can load
it); the optimizer in the fully reshardable format; the schedule in our metadata (Megatron-Core's scheduler state
does not hold everything a resume must check).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional

import torch.distributed as dist

from megatron_octo.errors import OctoError
from megatron_octo.training.params import model_state, unwrap
from megatron_octo.utils.io import DiskFullError, atomic_write_text, disk_full_reason, free_bytes, free_space
from megatron_octo.utils.progress import human_bytes

META_FILE = "octo_checkpoint.json"
LATEST_FILE = "latest_checkpointed_iteration.txt"
FORMAT_VERSION = 1
_ITER_RE = re.compile(r"^iter_(\d{7})$")
_OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}


class CheckpointError(OctoError, ValueError):
    """A checkpoint cannot be used as asked; the message names it and the fix."""


@dataclass
class CheckpointMeta:
    """What a checkpoint records beside the tensors."""

    step: int
    """Optimizer steps taken in this stage."""
    tokens: int
    """Tokens consumed in this stage."""
    kind: str = "training"
    """``training`` (model, optimizer, schedule) or ``model`` (weights only, e.g. converted from Hugging Face)."""
    recipe: str = ""
    """Name of the recipe that wrote it."""
    schedule: dict = field(default_factory=dict)
    """The LR schedule's parameters (style, lr, min_lr, warmup_iters, decay_iters, iters)."""
    layout: dict = field(default_factory=dict)
    """tp, pp, cp, dp and distributed_optimizer at save time."""
    model: dict = field(default_factory=dict)
    """The ModelConfig fields, so a checkpoint says what it holds."""
    lineage: List[dict] = field(default_factory=list)
    """Checkpoints this one descends from (oldest first): {path, step, tokens, recipe}."""
    batch: dict = field(default_factory=dict)
    """global_batch, micro_batch and seq_len of the stage (Megatron-LM's args record them); empty for weights."""
    format_version: int = FORMAT_VERSION


def iter_dir(root: Path, step: int) -> Path:
    return Path(root) / f"iter_{step:07d}"


def complete_checkpoints(root: Path) -> List[Path]:
    """Complete checkpoints under ``root`` (a ``checkpoints`` directory), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _ITER_RE.match(p.name) and (p / META_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len("iter_") :]))  # the name matched _ITER_RE


def latest_checkpoint(root: Path) -> Optional[Path]:
    """The newest complete checkpoint under ``root``, or None."""
    found = complete_checkpoints(root)
    return found[-1] if found else None


def read_meta(ckpt_dir: Path) -> CheckpointMeta:
    """The metadata of a complete checkpoint (one-line error when it is not one)."""
    path = Path(ckpt_dir) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir} is not a complete megatron-octo checkpoint (no {META_FILE})")
    data = json.loads(path.read_text())
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{ckpt_dir}: checkpoint format {data.get('format_version')} is not {FORMAT_VERSION}")
    return CheckpointMeta(**data)


def resolve(spec: str) -> Path:
    """``DIR`` (a checkpoint; a run directory, its ``checkpoints`` directory or a converted output: the checkpoint
    Megatron-LM's tracker file names there, ``release`` included, else the newest complete one) or ``DIR:STEP``
    (that step's checkpoint) to one of our checkpoint directories."""
    from megatron_octo.convert.megatron_lm import RELEASE, read_tracker

    name, _, step = spec.partition(":") if re.search(r":\d+$", spec) and not Path(spec).exists() else (spec, "", "")
    path = Path(name)
    if (path / META_FILE).is_file() and not step:
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if step:
        found = iter_dir(root, int(step))
        if not (found / META_FILE).is_file():
            steps = [int(p.name[5:]) for p in complete_checkpoints(root)]
            raise CheckpointError(f"no complete checkpoint for step {step} under {root} (steps there: {steps})")
        return found
    if root.is_dir() and read_tracker(root) == RELEASE and (root / RELEASE / META_FILE).is_file():
        return root / RELEASE
    latest = latest_checkpoint(root)
    if latest is None:
        raise CheckpointError(f"no complete checkpoint under {path}")
    return latest


def _model_sharded_state_dict(chunks, *, is_loading: bool) -> dict:
    """What a load fills: the model's own sharded state dict; what a save writes: the same with current
    parameters (``params.model_state`` completes a deferred all-gather first)."""
    if is_loading:
        if len(chunks) != 1:
            raise NotImplementedError("virtual pipeline stages are not supported yet")
        return unwrap(chunks[0]).sharded_state_dict()
    return model_state(chunks)


def _load_model_state(chunks, state: dict, ckpt_dir: Path) -> None:
    """Copy loaded tensors into the model; every parameter must be there (``_extra_state`` entries may not)."""
    result = unwrap(chunks[0]).load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt_dir} does not fit this model: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}: check model.* against the checkpoint's octo_checkpoint.json"
        )


def sharded_state(parts, *, with_optimizer: bool, is_loading: bool) -> dict:
    """The sharded state dict that a save writes or a load fills."""
    model_sd = _model_sharded_state_dict(parts.model, is_loading=is_loading)
    state = {"model": model_sd}
    if with_optimizer:
        state["optimizer"] = parts.optimizer.sharded_state_dict(
            model_sd, is_loading=is_loading, metadata=_OPTIMIZER_METADATA
        )
    if not is_loading:
        # FP8 parameters (TE Float8Tensor) are written dequantized: the format of a BF16 run's checkpoint.
        from megatron_octo.training.precision import dequantize_for_save

        dequantize_for_save(model_sd)
    return state


_SAMPLE_COUNTS = ("lr_warmup_steps", "num_steps", "lr_decay_steps", "wd_incr_steps")


def megatron_lm_state(meta: CheckpointMeta, parts) -> dict:
    """The non-tensor state Megatron-LM's ``load_checkpoint`` resumes from (written to common.pt by
    ``dist_checkpointing.save``): ``args`` (model, layout, batch geometry, schedule, consumed samples),
    ``checkpoint_version``, ``iteration``, the FLOPs counter (this stage's tokens x training FLOPs per token) and the
    scheduler state in Megatron-LM's units (its counters count samples: steps x global batch).

    What carries over to a Megatron-LM resume: weights, optimizer state, iteration, consumed samples, scheduler.
    What does not: RNG state (``no_save_rng`` is recorded, so Megatron-LM draws fresh dropout/data RNG) and the data
    position of our own mixtures (Megatron-LM restarts its sampler at ``consumed_train_samples`` of its dataset)."""
    from megatron_octo.config.schema import ModelConfig
    from megatron_octo.convert import megatron_lm
    from megatron_octo.training.flops import flops_per_token

    cfg = ModelConfig(**meta.model)
    lay, sched, batch = meta.layout, meta.schedule, meta.batch
    gbs, seq = int(batch.get("global_batch", 0)), int(batch.get("seq_len", 0))
    run = {
        "data_parallel_size": lay.get("dp", 1),
        "context_parallel_size": lay.get("cp", 1),
        "world_size": lay.get("tp", 1) * lay.get("pp", 1) * lay.get("cp", 1) * lay.get("dp", 1),
        "use_distributed_optimizer": bool(lay.get("distributed_optimizer", False)),
        "no_save_optim": False,
        "global_batch_size": gbs,
        "micro_batch_size": batch.get("micro_batch"),
        "seq_length": seq or None,
        "consumed_train_samples": meta.step * gbs,
        "train_iters": sched.get("iters"),
        "lr": sched.get("lr"),
        "min_lr": sched.get("min_lr"),
        "lr_decay_style": sched.get("style"),
        "lr_warmup_iters": sched.get("warmup_iters"),
        "lr_decay_iters": sched.get("decay_iters"),
    }
    flops = meta.tokens * flops_per_token(cfg, seq) if seq else 0.0
    state = megatron_lm.common_state(
        cfg, tp=lay.get("tp", 1), pp=lay.get("pp", 1), iteration=meta.step, flops=flops, run=run
    )
    if getattr(parts, "scheduler", None) is not None:
        scheduler = dict(parts.scheduler.state_dict())
        for key in _SAMPLE_COUNTS:  # ours steps once per iteration; Megatron-LM's once per sample
            scheduler[key] = scheduler[key] * max(gbs, 1)
        state["opt_param_scheduler"] = scheduler
    return state


def start_write_helper(context: Optional[str] = None) -> None:
    """Start Megatron-Core's checkpoint write helper now, deaf to SIGTERM, SIGUSR1 and SIGINT.

    The torch_dist writer collects its workers' results through one multiprocessing Manager per process, started
    at the first save and kept for the life of the rank. Slurm signals every process of a job step (``scancel
    --signal=USR1``, the SIGTERM of scancel, a time limit or a pre-emption), so the pre-emption signal killed the
    helper and the save it asked for failed with EOFError (found against a real Slurm, tests/launch/slurm). Ignored
    dispositions survive fork and exec: the helper is started here, before training, with the three signals ignored
    for the moment it takes (a signal in that moment is lost; the job script repeats SIGUSR1, and nothing is trained
    yet to save).

    ``context`` is the multiprocessing start method: Megatron-Core's ``spawn`` where CUDA is available (a fork of a
    process holding a CUDA context is unsafe), ``fork`` where it is absent: a spawned helper imports torch afresh to
    unpickle the first save's write results, 3.4 s of CPU in every saving process (measured on ``tiny-cpu``), which
    a forked one inherits. Start it before ``torch.distributed`` opens its sockets (``run_stage`` does), so the fork
    holds none of them. Safe to call more than once: the first call's helper stays.
    """
    try:
        from megatron.core.dist_checkpointing.strategies import filesystem_async
    except Exception:  # another Megatron-Core layout: nothing to prepare
        return
    if (
        getattr(filesystem_async, "_get_write_results_queue", None) is None
        or getattr(filesystem_async, "_results_queue", None) is not None
    ):
        return
    import multiprocessing

    import torch

    context = context or ("spawn" if torch.cuda.is_available() else "fork")
    # SIGINT too: a terminal's Ctrl-C reaches every process of the job, and the first one asks for a save
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:  # what Megatron-Core's _get_write_results_queue() does, with the start method chosen above
        filesystem_async._results_queue = multiprocessing.get_context(context).Manager().Queue()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _agreed_reason(exc: BaseException, found: Optional[str], guessed: Optional[str]) -> Optional[str]:
    """Why the save failed as a full disk (``found`` in the error, else ``guessed`` from the free space), agreed by
    every rank. torch.distributed.checkpoint raises ``CheckpointException`` on all ranks together, but only the
    coordinator's carries the ranks' errors: the ranks share what they found (a collective, safe only there), so
    each reports the full disk in one line rather than the others in a traceback."""
    from torch.distributed.checkpoint.api import CheckpointException

    if not isinstance(exc, CheckpointException) or not dist.is_initialized() or dist.get_world_size() == 1:
        return found or guessed
    views: List[Any] = [None] * dist.get_world_size()  # each rank's (found, guessed)
    dist.all_gather_object(views, (found, guessed))
    return next((f for f, _ in views if f), None) or next((g for _, g in views if g), None)


def _short_of_space(exc: BaseException, root: Path, latest: Optional[Path]) -> Optional[str]:
    """Why a failed save was probably a full disk although its error does not say so, or None.

    A tensor that torch.save streams into a shard file loses the write's ENOSPC: the zip writer's clean-up raises
    its own error ("unexpected pos"), and only that text crosses from Megatron-Core's writer process; torch.save of
    ``common.pt`` to a path says only "file write failed". Such a failure (a CheckpointException, OSError or
    RuntimeError), with less space left than the newest complete checkpoint takes, is reported as a full disk."""
    from torch.distributed.checkpoint.api import CheckpointException

    if latest is None or not isinstance(exc, (CheckpointException, OSError, RuntimeError)):
        return None
    free = free_bytes(root)
    needed = sum(p.stat().st_size for p in latest.rglob("*") if p.is_file())
    if free is None or free >= needed:
        return None
    failures = getattr(exc, "failures", None) or {}
    first = next(iter(failures.values()), exc)
    first = first[0] if isinstance(first, tuple) else first
    text = (str(first).strip().splitlines() or [type(first).__name__])[0][:160]
    return f"probably: the write failed with {text!r} and {latest.name} took {human_bytes(needed)}"


class _WriterFailureRecords(logging.Filter):
    """Drops Megatron-Core's log line about a failed checkpoint write ("Local process N encountered an error: ..."):
    the save raises the same error (a full disk as ``DiskFullError``, in one line), and without a configured
    handler Python's last-resort handler would print it to stderr besides."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "encountered an error" not in record.getMessage()


def _quiet_writer_failure_log() -> None:
    log = logging.getLogger("megatron.core.dist_checkpointing.strategies.filesystem_async")
    if not any(isinstance(f, _WriterFailureRecords) for f in log.filters):
        log.addFilter(_WriterFailureRecords())


class Saver:
    """Writes complete checkpoints under ``root``, synchronously or in the background.

    With ``async_save`` the tensors go to Megatron-Core's ``AsyncCallsQueue`` (written by a background process
    while training continues); the checkpoint is published (metadata written, renamed into place, old ones
    pruned) when the write is finalized: ``poll()`` once a step, ``close()`` at the end waits for it. Every method
    is collective over all ranks.
    """

    def __init__(self, root: Path, keep_last: int, ctx, async_save: bool = False, save: bool = True):
        self.root, self.keep_last, self.ctx = Path(root), keep_last, ctx
        self.queue = None
        self._in_flight: Optional[tuple] = None  # (step, tmp) of the background save not yet published
        if save:
            start_write_helper()
            _quiet_writer_failure_log()
        if async_save:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            self.queue = AsyncCallsQueue()

    def save(self, meta: CheckpointMeta, parts) -> Path:
        """Start (async) or do (sync) the save of ``parts`` at ``meta.step``; returns the final directory.

        A full disk (or quota) raises ``DiskFullError`` (one line: which directory, how much is free) after removing
        the partial save; the checkpoints saved before stay complete."""
        from megatron.core import dist_checkpointing

        final, tmp = iter_dir(self.root, meta.step), Path(f"{iter_dir(self.root, meta.step)}.tmp")
        self._finalize(blocking=True)  # one save in flight at a time
        with self._disk_full_is_one_line(meta.step, tmp):
            if self.ctx.is_main:
                if tmp.exists():
                    shutil.rmtree(tmp)  # a save that was killed earlier
                tmp.mkdir(parents=True)
            dist.barrier()
            state = sharded_state(parts, with_optimizer=True, is_loading=False)
            state.update(megatron_lm_state(meta, parts))
            if self.queue is None:
                dist_checkpointing.save(state, str(tmp), content_metadata=_OPTIMIZER_METADATA)
                dist.barrier()
                self._publish(meta, tmp, final)
                dist.barrier()
            else:
                request = dist_checkpointing.save(
                    state, str(tmp), async_sharded_save=True, content_metadata=_OPTIMIZER_METADATA
                )
                request.add_finalize_fn(lambda: self._publish(meta, tmp, final))
                self.queue.schedule_async_request(request)
                self._in_flight = (meta.step, tmp)
        return final

    @contextlib.contextmanager
    def _disk_full_is_one_line(self, step: int, tmp: Path) -> Iterator[None]:
        """Turn a full disk during the save of ``step`` into ``DiskFullError``; the partial save in ``tmp`` is
        removed (the main rank), which also gives back the space it took."""
        try:
            yield
        except BaseException as exc:  # torch.distributed.checkpoint's CheckpointException is a BaseException
            latest = latest_checkpoint(self.root)
            reason = _agreed_reason(exc, disk_full_reason(exc), _short_of_space(exc, self.root, latest))
            if reason is None:
                raise
            if self.ctx.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            kept = f"the newest complete checkpoint, {latest.name}, is intact" if latest else "no earlier checkpoint"
            raise DiskFullError(
                f"disk full ({reason}) saving the checkpoint of step {step} into {self.root}, which has "
                f"{free_space(self.root)} free: the partial save was removed and {kept}; free space (or lower "
                f"checkpoint.keep_last) and rerun the same command to resume"
            ) from None

    def _publish(self, meta: CheckpointMeta, tmp: Path, final: Path) -> None:
        """Runs once every rank's tensors are on disk: metadata, rename into place, prune (main rank)."""
        if not self.ctx.is_main:
            return
        atomic_write_text(tmp / META_FILE, json.dumps(asdict(meta), indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        atomic_write_text(self.root / LATEST_FILE, f"{meta.step}\n")
        _prune(self.root, self.keep_last)

    def _finalize(self, blocking: bool) -> None:
        """Publish a finished background save (wait for it with ``blocking``); a full disk is ``DiskFullError``."""
        if self.queue is None or self._in_flight is None:
            return
        step, tmp = self._in_flight
        with self._disk_full_is_one_line(step, tmp):
            self.queue.maybe_finalize_async_calls(blocking=blocking)
        if not self.queue.get_num_unfinalized_calls():
            self._in_flight = None

    def poll(self) -> None:
        """Publish background saves that have finished (cheap when none is in flight)."""
        self._finalize(blocking=False)

    def close(self) -> None:
        """Wait for a background save to finish and publish it."""
        if self.queue is not None:
            self._finalize(blocking=True)
            self.queue.close()


def _prune(root: Path, keep_last: int) -> None:
    """Remove complete checkpoints beyond the newest ``keep_last`` and stale in-progress saves."""
    for old in complete_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old)
    for stale in Path(root).glob("iter_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def _ensure_optimizer_state(optimizer) -> None:
    """Give a never-stepped torch Adam the state a loaded one will have (exp_avg, exp_avg_sq, step).

    Megatron-Core's distributed optimizer, without Apex or Transformer Engine (as on CPU), reads the ``step`` of
    every state entry while building the sharded state dict to load into, and torch's AdamW creates ``step`` only
    at its first update. The zeros written here are overwritten by the load.
    """
    import torch

    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner, init = getattr(opt, "optimizer", None), getattr(opt, "init_state_fn", None)
        if inner is None or init is None or not isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)):
            continue
        init(inner, opt.config)
        for group in inner.param_groups:
            for param in group["params"]:
                inner.state[param].setdefault("step", torch.tensor(0.0))


def _fix_torch_adam_step_on_load() -> None:
    """Work around a Megatron-Core 0.16 bug on the torch-AdamW path (no Apex / Transformer Engine, as on CPU).

    Loading the fully reshardable distributed-optimizer state skips the per-parameter ``step`` of the source but
    then copies every key of the destination, ``step`` included (torch's AdamW keeps one per parameter), and fails
    with ``KeyError: 'step'``. ``load_state_dict`` has already set that ``step`` from the checkpoint's param groups,
    so copying it onto itself is the correct no-op. Installed once; no effect where Apex or TE is present.
    """
    from megatron.core.optimizer import distrib_optimizer as mod

    cls = mod.DistributedOptimizer
    if mod.HAVE_APEX_OR_TE or getattr(cls, "_octo_step_fix", False):
        return
    original = cls._set_main_param_and_optimizer_states

    def set_states(self, model_param, tensors):
        if "step" not in tensors:
            group_index, group_order = self.model_param_group_index_map[model_param]
            state = self.optimizer.state[self.optimizer.param_groups[group_index]["params"][group_order]]
            if "step" in state:
                tensors = {**tensors, "step": state["step"]}
        return original(self, model_param, tensors)

    cls._set_main_param_and_optimizer_states = set_states
    cls._octo_step_fix = True


def _unshare_adam_steps(optimizer) -> None:
    """Give every parameter its own Adam ``step`` tensor after a load.

    Megatron-Core's distributed optimizer (torch-AdamW path) assigns one ``step`` tensor object to every
    parameter's state; torch's AdamW increments each parameter's ``step`` in place, so a shared tensor would
    advance once per parameter per update and corrupt the bias correction.
    """
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        for state in getattr(inner, "state", {}).values():
            if "step" in state:
                state["step"] = state["step"].clone()


# Hyperparameters a recipe sets: the recipe's values win over the checkpoint's (the known trap: an LR given on
# resume silently loses to the one the optimizer's param groups restore). Counters such as ``step`` stay loaded.
_RECIPE_GROUP_KEYS = ("lr", "max_lr", "min_lr", "weight_decay", "betas", "eps", "lr_mult", "wd_mult")


def _group_hyperparameters(optimizer) -> list:
    return [{k: g[k] for k in _RECIPE_GROUP_KEYS if k in g} for g in optimizer.param_groups]


def _restore_group_hyperparameters(optimizer, saved: list) -> None:
    for group, values in zip(optimizer.param_groups, saved):
        group.update(values)


def load(ckpt_dir: Path, parts, *, with_optimizer: bool) -> CheckpointMeta:
    """Load a checkpoint into ``parts`` (any TP/PP/DP layout); collective over all ranks."""
    from megatron.core import dist_checkpointing

    meta = read_meta(ckpt_dir)
    if with_optimizer and meta.kind != "training":
        raise CheckpointError(f"{ckpt_dir} holds weights only ({meta.kind}); it cannot restore an optimizer")
    if with_optimizer:
        _ensure_optimizer_state(parts.optimizer)
        _fix_torch_adam_step_on_load()
    state = dist_checkpointing.load(sharded_state(parts, with_optimizer=with_optimizer, is_loading=True), str(ckpt_dir))
    _load_model_state(parts.model, state["model"], ckpt_dir)
    if with_optimizer:
        recipe_values = _group_hyperparameters(parts.optimizer)
        parts.optimizer.load_state_dict(state["optimizer"])
        _restore_group_hyperparameters(parts.optimizer, recipe_values)
        _unshare_adam_steps(parts.optimizer)
    return meta
