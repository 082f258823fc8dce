"""Does the job's GPU count fit the recipe? World size, data-parallel size and the paths the ranks will read.

``octo launch`` resolves the recipe exactly as the ranks will (same name, same overrides), so a layout that the
job would refuse after waiting in the queue is refused at submission instead, with one line naming the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from megatron_octo.config.choices import STAGE_COMMANDS
from megatron_octo.config.validate import train_iters
from megatron_octo.launch.config import JobSpec, LaunchError

_PATH_FIELDS = (
    "checkpoint.load",
    "checkpoint.branch_from",
    "data.tokenizer",
    "data.cache_dir",
    "rl.init",
    "rl.prompts.tokenizer",
)
"""Recipe fields naming directories the ranks read; they are mounted into the container at their own path (fields
a recipe lacks are skipped)."""


@dataclass
class Layout:
    """How a recipe's parallelism splits the job's GPUs."""

    world: int
    """Processes of the job: nodes x GPUs per node."""
    tp: int
    """Tensor-parallel size (recipe)."""
    pp: int
    """Pipeline-parallel size (recipe)."""
    cp: int
    """Context-parallel size (recipe)."""
    dp: int
    """Data-parallel size: world / (tp * pp * cp)."""
    global_batch: int
    """Sequences per step (recipe)."""
    micro_batch: int
    """Sequences per rank per forward/backward (recipe)."""
    steps: int
    """Optimizer steps of the stage."""
    tokens_per_step: int
    """global_batch x seq_len."""
    read_paths: List[str]
    """Absolute directories named by the recipe's path fields (checkpoints to load, tokenizer, caches)."""
    command: str = "train"
    """The stage's ``octo`` subcommand; RL steps are counted in prompts, so only ``train`` lines show tokens."""

    def line(self) -> str:
        """One line for logs and the job script's header."""
        if self.command != "train":
            return (
                f"world {self.world} = TP {self.tp} x PP {self.pp} x CP {self.cp} x DP {self.dp}; {self.steps:,} steps"
            )
        return (
            f"world {self.world} = TP {self.tp} x PP {self.pp} x CP {self.cp} x DP {self.dp}; global batch "
            f"{self.global_batch} = micro-batch {self.micro_batch} x DP {self.dp} x "
            f"{self.global_batch // (self.micro_batch * self.dp)} accumulation; {self.steps:,} steps of "
            f"{self.tokens_per_step:,} tokens"
        )


def _fit(
    world: int, tp: int, pp: int, cp: int, global_batch: int, micro_batch: int, gpus: str, unit: str = "GPUs"
) -> int:
    model_parallel = tp * pp * cp
    if world % model_parallel:
        raise LaunchError(
            f"{gpus} = {world} {unit} is not a multiple of the recipe's TP x PP x CP = {tp} x {pp} x {cp} = "
            f"{model_parallel}: change --nodes/--gpus-per-node or parallel.tp/pp/cp"
        )
    dp = world // model_parallel
    if global_batch % (micro_batch * dp):
        raise LaunchError(
            f"the recipe's train.global_batch={global_batch} is not divisible by train.micro_batch x DP = "
            f"{micro_batch} x {dp} = {micro_batch * dp} ({gpus}): pick a node count whose DP divides it, or "
            f"override train.global_batch / train.micro_batch"
        )
    return dp


def _read_paths(recipe) -> List[str]:
    paths = []
    for dotted in _PATH_FIELDS:
        value = recipe
        for name in dotted.split("."):
            value = getattr(value, name, None)
        if isinstance(value, str) and value:
            head, _, step = str(value).rpartition(":")
            path = head if head and step.isdigit() else str(value)  # checkpoint specs may end in :STEP
            paths.append(os.path.abspath(os.path.expandvars(path)))
    return paths


def check_layout(job: JobSpec, world: int, gpus: str, unit: str = "GPUs") -> Layout:
    """Resolve ``job``'s recipe as its ranks will and check it against ``world`` processes; ``gpus`` words the
    GPU count in errors (``--nodes 4 x --gpus-per-node 8``), ``unit`` what is counted (``ranks`` for a CPU job).
    Raises ``LaunchError`` or ``ConfigError``."""
    from megatron_octo.config.loader import load_recipe

    if job.command not in STAGE_COMMANDS:
        raise LaunchError(f"--command {job.command!r} is not one of: {', '.join(STAGE_COMMANDS)}")
    recipe = load_recipe(job.recipe, job.overrides)
    check_stage(job, recipe)
    p, t = recipe.parallel, recipe.train
    dp = _fit(world, p.tp, p.pp, p.cp, t.global_batch, t.micro_batch, gpus, unit)
    return Layout(
        world=world,
        tp=p.tp,
        pp=p.pp,
        cp=p.cp,
        dp=dp,
        global_batch=t.global_batch,
        micro_batch=t.micro_batch,
        steps=train_iters(recipe),
        tokens_per_step=t.global_batch * t.seq_len,
        read_paths=_read_paths(recipe),
        command=job.command,
    )


def rank_command(job: JobSpec) -> List[str]:
    """The argv every rank runs (after the launcher's environment setup)."""
    return [
        job.python,
        "-m",
        "megatron_octo",
        job.command,
        "--recipe",
        job.recipe,
        "--run-dir",
        str(job.run_dir),
        *job.overrides,
    ]


def absolute_run_dir(run_dir: str) -> Path:
    """The run directory as every node sees it: absolute, ``~`` and variables expanded."""
    return Path(os.path.abspath(os.path.expanduser(os.path.expandvars(run_dir))))


def check_overrides(overrides: Sequence[str]) -> None:
    """Overrides are passed through to the ranks; a malformed one is refused here, before the queue."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise LaunchError(
                f"override {item!r} must look like key=value, e.g. train.iters=10 (flags go before the overrides)"
            )


def check_stage(job: JobSpec, recipe) -> None:
    """The recipe fits the subcommand the ranks run: ``--command rl`` needs an RL recipe (``rl.init`` and prompts
    set: what ``octo rl`` checks first), refused here rather than after the queue."""
    if job.command != "rl":
        return
    from megatron_octo.config.errors import ConfigError
    from megatron_octo.config.validate import validate_rl

    try:
        validate_rl(recipe)
    except ConfigError as exc:
        raise LaunchError(
            f"--command rl with recipe {job.recipe}: {exc} (a training recipe? use --command train, or "
            "an RL recipe such as octothinker-3b-grpo with rl.init=...)"
        ) from None
