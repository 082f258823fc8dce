"""One stage runner for ``octo train`` and ``octo rl``: the run directory, the world check, resume, the save and stop
policy, and the summary. The two loops keep only what differs (what a step does and what it logs).

``run_stage`` is the entry: it checks the world and the run directory before any process group exists, starts the
parallel context, lets the stage set itself up (build, restore: everything that can refuse a bad recipe), and only
then writes ``recipe.yaml``, runs the steps and writes the summary. With ``--overwrite`` the earlier run's outputs
are moved aside (``RUN_DIR/.overwritten``) before setup, removed once setup has accepted the new recipe, and moved
back when it refuses it: a mistake in the new command never costs the old run.

``CheckpointManager`` owns the policy after each step: save every ``checkpoint.save_interval`` steps and at the
last, keep the newest ``checkpoint.keep_last``, stop after ``train.exit_interval`` steps of one invocation, save and
stop on SIGTERM / SIGUSR1 / Ctrl-C (exit ``REQUEUE_EXIT_CODE`` unless the step was the last), and publish finished
background saves. Its answer after a step says whether it saved, whether to stop, and with which exit code.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

from megatron_octo.config.loader import to_yaml
from megatron_octo.config.schema import RecipeConfig
from megatron_octo.training import checkpoint as ckpt
from megatron_octo.training.resume import Start, restore, schedule_params
from megatron_octo.training.signals import REQUEUE_EXIT_CODE, StopRequest
from megatron_octo.utils.io import OutputExistsError, atomic_write_text, check_writable_dir

if TYPE_CHECKING:  # the stage entry is imported by the CLI before torch.distributed is needed
    from megatron_octo.parallel import ParallelContext

RUN_FILES = ("metrics.jsonl", "recipe.yaml", "train_summary.json", "tensorboard", "checkpoints")
"""What every stage writes into its run directory (``--overwrite`` removes these and the stage's own)."""
ASIDE = ".overwritten"
"""``RUN_DIR/.overwritten``: where ``--overwrite`` keeps the earlier run's outputs while the new run sets up. Without
``recipe.yaml`` beside it, the new run never got past setup (the process was killed): it holds the earlier run."""


@dataclass(frozen=True)
class StageSpec:
    """What differs between the stages at the level of the run directory."""

    command: str
    """``train`` or ``rl``: names messages (``[octo rl]``) and selects the world check."""
    summary_file: str
    """The summary the main rank writes when the stage ends."""
    run_files: Tuple[str, ...] = ()
    """Outputs besides ``RUN_FILES`` that ``--overwrite`` removes."""
    collective_timeout_s: int = 600
    """How long a rank may wait in a collective."""

    @property
    def tag(self) -> str:
        return "[octo]" if self.command == "train" else f"[octo {self.command}]"

    @property
    def files(self) -> Tuple[str, ...]:
        return RUN_FILES + (self.summary_file,) + self.run_files


TRAIN_STAGE = StageSpec(command="train", summary_file="train_summary.json", run_files=("init",))
"""``init``: ``training.start.INIT_DIR``, the conversion of a ``checkpoint.load`` that is not one of our checkpoints
(the new run may load another one)."""


# ----------------------------------------------------------------------------------------------- run directory

_MODEL_IDENTITY = (
    "family",
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "kv_channels",
    "vocab_size",
    "tie_word_embeddings",
    "add_qkv_bias",
)
"""The model fields a resume must keep (with the recipe's name): they decide which tensors a checkpoint holds.
Others (RoPE scaling, position limit, init, layer spec) may change on resume."""


def _identity_clash(run_dir: Path, recipe: RecipeConfig) -> Optional[str]:
    """What makes ``recipe`` another run than the one in ``run_dir`` (its recipe.yaml, or the newest readable
    checkpoint's metadata), or None."""
    from megatron_octo.config.loader import load_recipe

    saved = run_dir / "recipe.yaml"
    if saved.is_file():
        try:
            before = load_recipe(str(saved), [])
        except Exception:  # an unreadable or outdated recipe.yaml: the checkpoints below still say which model
            before = None
        if before is not None:
            if before.name != recipe.name:
                return f"recipe {before.name!r}, not {recipe.name!r}"
            diffs = _model_diffs(asdict(before.model), asdict(recipe.model))
            if diffs:
                return f"another model ({diffs})"
    for path in reversed(ckpt.complete_checkpoints(run_dir / "checkpoints")):
        try:
            meta = ckpt.read_meta(path)
        except (ckpt.CheckpointError, ValueError, TypeError):
            continue  # resume says which checkpoints are unusable and why
        diffs = _model_diffs(meta.model, asdict(recipe.model))
        return f"a checkpoint of another model ({path.name}: {diffs})" if diffs else None
    return None


def _model_diffs(saved: Dict, wanted: Dict) -> str:
    keys = [k for k in _MODEL_IDENTITY if k in saved and k in wanted and saved[k] != wanted[k]]
    return ", ".join(f"model.{k}={saved[k]!r} there vs {wanted[k]!r} here" for k in keys[:3])


def check_run_dir(run_dir: Path, recipe: RecipeConfig, overwrite: bool, spec: StageSpec) -> None:
    """Refuse, in one line and before anything is written, a run directory this stage cannot use without
    ``--overwrite``: one that is not a writable directory, one that holds another recipe's or model's run, or one
    whose run finished without a checkpoint (its outputs are results). A run that stopped before its first save
    restarts from step 0; one with a complete checkpoint resumes."""
    check_writable_dir(run_dir, "--run-dir")
    if overwrite:
        return
    if (run_dir / ASIDE).is_dir() and not (run_dir / "recipe.yaml").exists():
        raise OutputExistsError(
            f"run directory {run_dir} holds an earlier run set aside by an --overwrite that was interrupted "
            f"({run_dir / ASIDE}): pass --overwrite again to replace it, or move its contents back into {run_dir} "
            "to resume it"
        )
    clash = _identity_clash(run_dir, recipe)
    if clash:
        raise OutputExistsError(
            f"run directory {run_dir} holds a run of {clash}: resume it with the recipe it was "
            f"started with, pick a new --run-dir, or pass --overwrite"
        )
    if ckpt.complete_checkpoints(run_dir / "checkpoints"):
        return
    if (run_dir / spec.summary_file).exists():
        raise OutputExistsError(
            f"run directory {run_dir} holds a finished run ({spec.summary_file}) without "
            f"checkpoints to resume from: pick a new --run-dir or pass --overwrite"
        )


def prepare_run_dir(run_dir: Path, spec: StageSpec, overwrite: bool) -> Optional[Path]:
    """Create the run directory (main rank). With ``overwrite``, move the stage's earlier outputs into
    ``RUN_DIR/.overwritten`` (renames: nothing is copied or lost) and return that directory; ``keep_new_run`` removes
    it once the new run has passed its setup, ``restore_old_run`` moves it back when setup fails.

    An ``.overwritten`` left by an interrupted ``--overwrite`` still holds the earlier run unless the new run had
    written its ``recipe.yaml``: it is kept as the earlier run (what that attempt wrote goes), or else removed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    aside = run_dir / ASIDE
    if aside.is_dir() and (run_dir / "recipe.yaml").exists():
        shutil.rmtree(aside)  # the new run had started: this is the run it replaced
    if not overwrite:
        return None
    if aside.is_dir():
        _remove(run_dir, spec.files)
        return aside
    aside.mkdir()
    for name in spec.files:
        if os.path.lexists(run_dir / name):
            os.replace(run_dir / name, aside / name)
    return aside


def restore_old_run(run_dir: Path, spec: StageSpec, aside: Path) -> None:
    """Undo ``prepare_run_dir``: remove what the new run wrote, move the earlier run's outputs back."""
    _remove(run_dir, spec.files)
    for path in sorted(aside.iterdir()):
        os.replace(path, run_dir / path.name)
    aside.rmdir()


def keep_new_run(aside: Path) -> None:
    """The new run is under way: the earlier run's outputs set aside by ``prepare_run_dir`` go."""
    shutil.rmtree(aside)


def _remove(run_dir: Path, names: Sequence[str]) -> None:
    for name in names:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()


def write_summary(path: Path, summary: Dict) -> bool:
    """Write the stage's summary, except for an invocation that ran no step over an existing summary (the last
    real one stays). Returns whether it wrote."""
    if not summary.get("steps_run") and path.exists():
        return False
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return True


def megatron_lm_warning(recipe: RecipeConfig) -> Optional[str]:
    """What Megatron-LM builds differently from the model of the checkpoints this stage saves (they are Megatron-LM
    save folders: ``convert.megatron_lm.loading_caveat``), or None (no checkpoints, or nothing to say). Said once,
    when the stage has accepted its recipe, as ``octo convert --to mcore`` says it of its output."""
    from megatron_octo.convert.megatron_lm import loading_caveat

    return loading_caveat(recipe.model) if recipe.checkpoint.save else None


def world_check(spec: StageSpec, recipe: RecipeConfig, world_size: int) -> int:
    """The data-parallel size for ``world_size`` processes, or a ``ConfigError``: the layout, then the stage's
    batch geometry (``train.global_batch`` for training, RL's own for RL)."""
    from megatron_octo.config.validate import check_world, data_parallel_size, validate_rl

    if spec.command == "rl":
        dp = data_parallel_size(recipe.parallel, world_size)
        validate_rl(recipe, dp)
        return dp
    return check_world(recipe, world_size)


Summary = Dict[str, Any]
Session = Callable[[], Summary]
"""A set-up stage: running it takes the steps and returns the summary."""


def run_stage(
    spec: StageSpec,
    recipe: RecipeConfig,
    run_dir: Path,
    overwrite: bool,
    setup: Callable[["ParallelContext"], Session],
    finish: Optional[Callable[[Summary], None]] = None,
) -> Summary:
    """Run one stage in this process (one rank of a torchrun world, or a world of one).

    ``setup(ctx)`` builds and restores (collective) and returns the session; ``finish(summary)`` runs on the main
    rank after the steps, before the summary is written (RL's export). ``recipe.yaml`` is written only once setup
    has accepted the recipe on every rank, so a setup mistake leaves the run directory as it was; with
    ``overwrite`` the earlier run's outputs are moved back then, and removed only after ``recipe.yaml`` is written."""
    import torch.distributed as dist

    from megatron_octo import parallel

    world_check(spec, recipe, int(os.environ.get("WORLD_SIZE", "1")))
    check_run_dir(run_dir, recipe, overwrite, spec)
    ckpt.start_write_helper()  # before torch.distributed opens sockets: a forked helper (CPU) must not hold them
    ctx = parallel.initialize(recipe.parallel, seed=recipe.train.seed, timeout_s=spec.collective_timeout_s)
    aside: Optional[Path] = None
    try:
        if ctx.is_main:
            aside = prepare_run_dir(run_dir, spec, overwrite)
        dist.barrier()
        try:
            session = setup(ctx)
            dist.barrier()  # every rank accepted the recipe (a rank that refused it fails this barrier)
        except BaseException:
            if aside is not None:
                restore_old_run(run_dir, spec, aside)
            raise
        if ctx.is_main:
            atomic_write_text(run_dir / "recipe.yaml", to_yaml(recipe))
            if aside is not None:
                keep_new_run(aside)
            warning = megatron_lm_warning(recipe)
            if warning:  # the run's log, not stderr: a later error there stays the only line
                print(f"note: {warning}", flush=True)
        summary = session()
        if ctx.is_main:
            if finish is not None:
                finish(summary)
            write_summary(run_dir / spec.summary_file, summary)
        # Leave together: a launcher that kills the other ranks when one exits (srun --kill-on-bad-exit,
        # torchrun) must not cut rank 0 off while it still publishes a checkpoint or writes the summary.
        dist.barrier()
        return summary
    finally:
        parallel.destroy(ctx)


def resume(
    recipe: RecipeConfig, run_dir: Path, parts, iters: int, ctx, spec: StageSpec, log: Callable[[str], None] = print
) -> Start:
    """Where the stage starts (``resume.restore``), said on the main rank; records of later steps in
    ``metrics.jsonl`` (and a torn last line) are dropped."""
    from megatron_octo.training.metrics import truncate_metrics

    start = restore(recipe, run_dir, parts, iters, ctx, log if ctx.is_main else _quiet)
    if ctx.is_main:
        if start.source:
            log(f"{spec.tag} {start.source}")
        elif not ckpt.complete_checkpoints(run_dir / "checkpoints") and (run_dir / "metrics.jsonl").exists():
            log(
                f"{spec.tag} {run_dir} holds no complete checkpoint (the last run stopped before its first save): "
                f"starting at step 0"
            )
        truncate_metrics(run_dir / "metrics.jsonl", start.step)
    return start


def _quiet(_: str) -> None:
    return None


# ------------------------------------------------------------------------------------------ checkpoint manager


@dataclass
class StepOutcome:
    """The manager's answer after a step."""

    saved: Optional[Path] = None
    """The checkpoint this step wrote (or started writing, with async save), else None."""
    stop: bool = False
    """Leave the loop now."""
    exit_code: int = 0
    """What the command exits with if it stops here: ``REQUEUE_EXIT_CODE`` after a stop signal before the last
    step, else 0."""
    reason: str = ""
    """Why it stops: ``exit_interval``, a signal's name, or empty."""


@dataclass
class Companion:
    """Something saved beside the stage's model at every save, synchronously and first (PPO's critic), so that a
    complete stage checkpoint implies its companion's."""

    subdir: str
    recipe: RecipeConfig
    parts: object


@dataclass
class CheckpointManager:
    """The save and stop policy of one stage invocation; every method is collective over all ranks.

    Use as a context manager (installs the stop-signal handlers, waits for a background save on a clean exit)
    and drive the loop with ``steps()``, reporting each finished step with ``step_done``."""

    recipe: RecipeConfig
    run_dir: Path
    ctx: "ParallelContext"
    start: Start
    iters: int
    spec: StageSpec
    layout_extra: Dict = field(default_factory=dict)
    """Recorded in each checkpoint's ``layout`` beside tp/pp/cp/dp (RL: its algorithm and batch)."""
    companions: Sequence[Companion] = ()
    log: Callable[[str], None] = print
    steps_run: int = 0
    tokens: int = 0
    outcome: StepOutcome = field(default_factory=StepOutcome)

    def __post_init__(self) -> None:
        c = self.recipe.checkpoint
        self.tokens = self.start.tokens
        self.saver = ckpt.Saver(self.run_dir / "checkpoints", c.keep_last, self.ctx, c.async_save, save=c.save)
        self._companion_savers = [ckpt.Saver(self.run_dir / x.subdir, c.keep_last, self.ctx) for x in self.companions]
        self._stop: Optional[StopRequest] = None

    @property
    def stop(self) -> StopRequest:
        """The stop-signal handlers (installed while the manager is entered)."""
        if self._stop is None:
            raise RuntimeError("CheckpointManager used outside its `with` block")
        return self._stop

    def __enter__(self) -> "CheckpointManager":
        self._stop = StopRequest(announce=self.ctx.is_main)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.saver.close()
        finally:
            self.stop.restore()

    def steps(self) -> Iterator[int]:
        """The 0-based steps to run, from the start step until the last or until the policy says stop."""
        for step in range(self.start.step, self.iters):
            yield step
            if self.outcome.stop:
                return

    def due(self, step: int) -> bool:
        """Whether the regular policy saves after ``step`` (steps taken): every ``save_interval`` and the last."""
        c = self.recipe.checkpoint
        return c.save and (step == self.iters or (c.save_interval is not None and step % c.save_interval == 0))

    def step_done(self, step: int, parts, tokens: int, can_save: bool = True) -> StepOutcome:
        """Report that ``step`` steps are taken and the last one consumed ``tokens``; save and decide.

        ``can_save=False`` (a step whose update was skipped) saves nothing even when a save is due."""
        self.steps_run += 1
        self.tokens += tokens
        exit_interval = self.recipe.train.exit_interval
        exiting = exit_interval is not None and self.steps_run == exit_interval
        signalled = self.stop.agreed(self.ctx.device)  # before any early exit: a signal is never lost
        self.saver.poll()
        saved = None
        if can_save and (self.due(step) or ((exiting or signalled) and self.recipe.checkpoint.save)):
            saved = self.save(step, parts)
        preempted = signalled and step < self.iters  # a signal on the last step changes nothing
        if signalled and self.ctx.is_main:
            done = f"saved step {step}" if saved else self._not_saved(can_save)
            self.log(f"{self.spec.tag} {self.stop.signal_name or 'a stop signal'} received: {done}, exiting")
        reason = (self.stop.signal_name or "signal") if signalled else ("exit_interval" if exiting else "")
        self.outcome = StepOutcome(
            saved=saved, stop=exiting or signalled, exit_code=REQUEUE_EXIT_CODE if preempted else 0, reason=reason
        )
        return self.outcome

    def _not_saved(self, can_save: bool) -> str:
        latest = ckpt.latest_checkpoint(self.run_dir / "checkpoints")
        why = "checkpoint.save=false" if can_save else "the step's loss was not finite"
        return f"not saved ({why}; the newest checkpoint is {latest.name if latest else 'none'})"

    def meta(self, step: int, recipe: Optional[RecipeConfig] = None) -> ckpt.CheckpointMeta:
        """The metadata of a checkpoint of ``step`` (``recipe``: a companion's)."""
        recipe = recipe or self.recipe
        ctx = self.ctx
        layout = {
            "tp": ctx.tp,
            "pp": ctx.pp,
            "cp": ctx.cp,
            "dp": ctx.dp,
            "distributed_optimizer": recipe.parallel.distributed_optimizer,
            **self.layout_extra,
        }
        t = recipe.train  # Megatron-LM's args record the batch geometry of a training stage (not RL's)
        batch = (
            {"global_batch": t.global_batch, "micro_batch": t.micro_batch, "seq_len": t.seq_len}
            if self.spec.command == "train"
            else {}
        )
        return ckpt.CheckpointMeta(
            step=step,
            tokens=self.tokens,
            recipe=recipe.name,
            schedule=schedule_params(recipe, self.iters),
            lineage=self.start.lineage,
            model=asdict(recipe.model),
            layout=layout,
            batch=batch,
        )

    def save(self, step: int, parts) -> Path:
        """Save ``parts`` (and the companions, first) as the checkpoint of ``step``."""
        for companion, saver in zip(self.companions, self._companion_savers):
            saver.save(self.meta(step, companion.recipe), companion.parts)
        return self.saver.save(self.meta(step), parts)

    def summary(self) -> Dict[str, Any]:
        """The fields every stage's summary carries."""
        return {
            "steps": self.iters,
            "start_step": self.start.step,
            "steps_run": self.steps_run,
            "tokens_consumed": self.tokens,
            "preempted": self.outcome.exit_code == REQUEUE_EXIT_CODE,
            "exit_code": self.outcome.exit_code,
            "lineage": self.start.lineage,
        }


def exit_code(summary: Dict) -> int:
    """The command's exit status for a stage's summary."""
    return int(summary.get("exit_code", REQUEUE_EXIT_CODE if summary.get("preempted") else 0))


def metrics_writer(ctx, run_dir: Path, iters: int, recipe: RecipeConfig, writer_cls=None):
    """The main rank's metrics writer (``writer_cls``: the stage's ``MetricsWriter`` subclass), None elsewhere."""
    from megatron_octo.training.metrics import MetricsWriter

    if not ctx.is_main:
        return None
    return (writer_cls or MetricsWriter)(run_dir, iters, recipe.logging.tensorboard, recipe.logging.log_interval)
