"""`octo launch slurm`: render an sbatch script for one OctoThinker stage, and submit it.

The job script's contract (what tests/launch checks):

- ``#SBATCH`` directives ask for ``nodes`` x ``gpus_per_node`` GPUs, one task per GPU (``srun`` launcher) or one
  per node (``torchrun``), and ``--signal=B:USR1@LEAD``: ``LEAD`` seconds before the time limit Slurm signals the
  batch shell, which forwards SIGUSR1 to every rank (``scancel --signal=USR1``, steps only), again every
  ``REFORWARD_S`` seconds until the step ends (a rank that was still starting ignored the first one).
- A CPU job (``gpus_per_node`` 0) asks for no GPUs and runs ``ranks_per_node`` tasks a node over gloo; each rank's
  OMP_NUM_THREADS defaults to its CPUs (``SLURM_CPUS_PER_TASK``).
- Every rank ignores SIGUSR1 until training installs its handler (``training.signals``): on the signal the ranks
  agree, save a complete checkpoint, and exit with ``REQUEUE_EXIT_CODE``.
- The script requeues its own job (``scontrol requeue``) when the step exits with ``REQUEUE_EXIT_CODE``, or
  exits non-zero after the shell got SIGUSR1 (torchrun reports any failed worker as 1; srun's --kill-on-bad-exit
  may end ranks still leaving with SIGTERM); at most ``max_requeues`` times. The requeued job runs the same command
  on the same run directory, so it resumes from the newest complete checkpoint in ``RUN_DIR/checkpoints``.
- SIGTERM to the shell means Slurm is ending the job: the script requeues then only at the time limit
  (``Reason=TimeLimit``); a job stopped with ``scancel`` stays cancelled (Slurm would otherwise accept the
  requeue of a cancelled job, as measured on 22.05).
- Rendezvous: rank 0 lives on the first node of the allocation (``MASTER_ADDR``), on a port derived from the job
  id (``MASTER_PORT``); ranks follow Slurm's node order, so tensor-parallel groups stay inside a node.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

from megatron_octo.config.choices import SLURM_LAUNCHERS
from megatron_octo.launch.config import NCCL_DEFAULTS, JobSpec, LaunchError, SlurmConfig, time_limit_seconds
from megatron_octo.launch.layout import Layout, rank_command
from megatron_octo.training.signals import REQUEUE_EXIT_CODE
from megatron_octo.utils.io import OutputExistsError, atomic_write_text, check_writable_dir
from megatron_octo.version import __version__

PORT_BASE, PORT_SPAN = 20000, 20000
"""MASTER_PORT = PORT_BASE + job id mod PORT_SPAN: two jobs sharing a node rarely pick the same port."""

REFORWARD_S = 10
"""Seconds between repeats of the forwarded SIGUSR1 while the step runs: ranks ignore it until training has installed
its handler, and Slurm may signal up to 30 s before the lead (its limit check runs every 30 s), so a signal can
arrive while ranks still import or load a checkpoint."""


def job_name(job: JobSpec, cfg: SlurmConfig) -> str:
    """The Slurm job name: ``cfg.job_name`` or ``octo-<recipe name>``."""
    return cfg.job_name or f"octo-{Path(job.recipe).stem}"


def log_dir(job: JobSpec, cfg: SlurmConfig) -> Path:
    """Directory of the job script, the job's output and each attempt's records."""
    return Path(cfg.log_dir) if cfg.log_dir else job.run_dir / "slurm"


def check_slurm(cfg: SlurmConfig) -> None:
    """One-line ``LaunchError`` for options that cannot form a job."""
    if cfg.nodes < 1:
        raise LaunchError(f"--nodes {cfg.nodes} must be >= 1")
    if cfg.gpus_per_node < 0:
        raise LaunchError(f"--gpus-per-node {cfg.gpus_per_node} must be >= 0 (0: a CPU job)")
    if cfg.cpu and cfg.ranks_per_node is None:
        raise LaunchError("--gpus-per-node 0 (a CPU job) needs --ranks-per-node N: the training processes a node runs")
    if cfg.ranks < 1:
        raise LaunchError(f"--ranks-per-node {cfg.ranks} must be >= 1")
    if not cfg.cpu and cfg.ranks != cfg.gpus_per_node:
        raise LaunchError(
            f"--ranks-per-node {cfg.ranks} differs from --gpus-per-node {cfg.gpus_per_node}: a GPU job "
            f"runs one rank per GPU (drop --ranks-per-node, or pass --gpus-per-node 0 for a CPU job)"
        )
    if cfg.launcher not in SLURM_LAUNCHERS:
        raise LaunchError(f"--launcher {cfg.launcher!r} is not one of: {', '.join(SLURM_LAUNCHERS)}")
    limit = time_limit_seconds(cfg.time)
    if not 60 <= cfg.signal_lead_s < limit:
        raise LaunchError(
            f"--signal-lead {cfg.signal_lead_s} s must be at least 60 (Slurm's resolution) and "
            f"shorter than --time {cfg.time} ({limit} s): lengthen --time or shorten --signal-lead"
        )
    if cfg.max_requeues < 0:
        raise LaunchError(f"--max-requeues {cfg.max_requeues} must be >= 0")
    if cfg.cpus_per_node is not None and cfg.cpus_per_node < _tasks_per_node(cfg):
        raise LaunchError(
            f"--cpus-per-node {cfg.cpus_per_node} is fewer than the {_tasks_per_node(cfg)} tasks "
            f"of a node: request at least one core per task"
        )
    if cfg.container is not None and (not cfg.container.strip() or any(c.isspace() for c in cfg.container)):
        raise LaunchError(
            f"--container {cfg.container!r} has whitespace; an image is a registry URI "
            "(nvcr.io#org/image:tag) or a .sqsh path without spaces"
        )
    for mount in cfg.mounts:
        if "," in mount or not mount or mount.startswith(":"):
            raise LaunchError(f"--mount {mount!r} must be SRC[:DST[:FLAGS]] without commas (repeat --mount)")


def _tasks_per_node(cfg: SlurmConfig) -> int:
    return cfg.ranks if cfg.launcher == "srun" else 1


def _directives(job: JobSpec, cfg: SlurmConfig) -> List[str]:
    tasks = _tasks_per_node(cfg)
    lines = [f"--job-name={job_name(job, cfg)}", f"--nodes={cfg.nodes}", f"--ntasks-per-node={tasks}"]
    if not cfg.cpu:
        lines.append(f"--gpus-per-node={cfg.gpus_per_node}")
    lines.append(f"--time={cfg.time}")
    if cfg.cpus_per_node is not None:
        lines.append(f"--cpus-per-task={cfg.cpus_per_node // tasks}")
    for flag in ("account", "partition", "qos"):
        if getattr(cfg, flag):
            lines.append(f"--{flag}={getattr(cfg, flag)}")
    if cfg.exclusive:
        lines += ["--exclusive", "--mem=0"]
    if cfg.dependency:
        lines.append(f"--dependency={cfg.dependency}")
    lines += [
        "--requeue",
        f"--signal=B:USR1@{cfg.signal_lead_s}",
        "--open-mode=append",
        f"--output={log_dir(job, cfg)}/%x-%j.out",
    ]
    lines += list(cfg.sbatch_args)
    return [f"#SBATCH {line}" for line in lines]


def _environment(cfg: SlurmConfig) -> List[str]:
    lines = ["# Networking and runtime defaults; a value set where sbatch runs wins."]
    defaults = dict(NCCL_DEFAULTS)
    if cfg.cpu:  # gloo only; each rank's threads are its CPUs (srun sets SLURM_CPUS_PER_TASK with --cpus-per-task)
        defaults = {"OMP_NUM_THREADS": "${SLURM_CPUS_PER_TASK:-1}", "PYTHONUNBUFFERED": "1"}
    lines += [f'export {name}="${{{name}:-{value}}}"' for name, value in defaults.items() if name not in cfg.env]
    if cfg.socket_ifname:
        lines += [
            f"export NCCL_SOCKET_IFNAME={shlex.quote(cfg.socket_ifname)}",
            f"export GLOO_SOCKET_IFNAME={shlex.quote(cfg.socket_ifname)}",
        ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(cfg.env.items())]
    return lines


def _mounts(job: JobSpec, cfg: SlurmConfig, layout: Layout) -> str:
    """Pyxis ``--container-mounts``: user mounts, then run dir, data and recipe paths at their own paths, then the
    submit directory (the container's working directory)."""
    own = [str(job.run_dir)] + ([os.environ["OCTO_DATA"]] if os.environ.get("OCTO_DATA") else []) + layout.read_paths
    mounts, seen = [], set()
    for mount in list(cfg.mounts) + own:
        spec = mount if ":" in mount else f"{mount}:{mount}"
        if spec.split(":")[1] not in seen:
            seen.add(spec.split(":")[1])
            mounts.append(spec)
    return shlex.quote(",".join(mounts) + ",") + '"$SLURM_SUBMIT_DIR:$SLURM_SUBMIT_DIR"'


def _task(job: JobSpec, cfg: SlurmConfig) -> List[str]:
    """The per-task shell program, expanded on the compute node (inside the container)."""
    argv = [shlex.quote(a) for a in rank_command(job)]
    if cfg.launcher == "srun":
        head = [
            'export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" WORLD_SIZE="$SLURM_NTASKS"',
            'export LOCAL_WORLD_SIZE="$SLURM_NTASKS_PER_NODE"',
        ]
        run = argv
    else:
        head = []
        run = [
            argv[0],
            "-m",
            "torch.distributed.run",
            '--nnodes="$SLURM_NNODES"',
            '--node-rank="$SLURM_NODEID"',
            f"--nproc-per-node={cfg.ranks}",
            '--master-addr="$MASTER_ADDR"',
            '--master-port="$MASTER_PORT"',
            *argv[1:],
        ]
    return [
        "read -r -d '' TASK <<'OCTO_TASK' || true",
        "trap '' USR1  # ignored until training installs its save-and-exit handler",
        *head,
        "exec " + " ".join(run),
        "OCTO_TASK",
    ]


def _step(job: JobSpec, cfg: SlurmConfig, layout: Layout) -> List[str]:
    flags = ["--kill-on-bad-exit=1", f"--nodes={cfg.nodes}", f"--ntasks-per-node={_tasks_per_node(cfg)}"]
    if cfg.cpus_per_node is not None:  # srun no longer inherits sbatch's --cpus-per-task (Slurm 22.05+)
        flags.append(f"--cpus-per-task={cfg.cpus_per_node // _tasks_per_node(cfg)}")
    if cfg.container:
        flags += [
            f"--container-image={shlex.quote(cfg.container)}",
            f"--container-mounts={_mounts(job, cfg, layout)}",
            '--container-workdir="$SLURM_SUBMIT_DIR"',
            "--no-container-mount-home",
        ]
    return [
        "srun " + " \\\n    ".join(flags) + ' \\\n    bash -c "$TASK" &',
        "STEP_PID=$!",
        "start_forwarder  # a signal that came before the step",
    ]


_PRELUDE = """\
ATTEMPT="${{SLURM_RESTART_COUNT:-0}}"
ATTEMPT_DIR="$LOG_DIR/$SLURM_JOB_ID.$ATTEMPT"
mkdir -p "$ATTEMPT_DIR"
echo "[octo-launch] job $SLURM_JOB_ID attempt $ATTEMPT on $SLURM_JOB_NUM_NODES nodes: {layout}"
"""

_RENDEZVOUS = """\
# Rendezvous: global rank 0 on the first node of the allocation.
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export MASTER_ADDR
export MASTER_PORT="$(( {base} + SLURM_JOB_ID % {span} ))"
scontrol show hostnames "$SLURM_JOB_NODELIST" > "$ATTEMPT_DIR/nodes.txt"
env | grep -E '^(SLURM_|NCCL_|GLOO_|MASTER_|CUDA_|TORCH_|OMP_)' | sort > "$ATTEMPT_DIR/env.txt"
"""

_SIGNALS = """\
# Pre-emption: Slurm signals this shell (B:USR1) before the time limit; the ranks get SIGUSR1 from here, save a
# checkpoint and exit with $REQUEUE_EXIT_CODE, and the job requeues itself. SIGTERM means Slurm is ending the job
# (scancel, the time limit, pre-emption): it reaches the ranks from Slurm itself, and they save if KillWait allows.
PREEMPTED=0
TERMINATED=0
SIGNALLED=0
FORWARDED=0
STEP_PID=""
FORWARDER_PID=""
forward_usr1() {
    # Repeated until the step ends: ranks ignore SIGUSR1 until training installs its handler, and Slurm may signal
    # while they still start. The subshell ignores USR1 itself (it is part of the batch step).
    trap '' USR1
    while kill -0 "$STEP_PID" 2>/dev/null; do
        scancel --signal=USR1 "$SLURM_JOB_ID"
        sleep {reforward}
    done
}
start_forwarder() {
    if [ "$FORWARDED" = 1 ] && [ -n "$STEP_PID" ] && [ -z "$FORWARDER_PID" ]; then
        forward_usr1 &
        FORWARDER_PID=$!
    fi
}
on_signal() {
    SIGNALLED=1
    if [ "$1" = TERM ]; then TERMINATED=1; else PREEMPTED=1; fi
    echo "[octo-launch] SIG$1 received: the ranks save a checkpoint and stop"
    # One forwarder (Slurm releases that also signal the batch step with scancel would bring the signal back
    # here), started once the step is.
    if [ "$1" = USR1 ] && [ "$FORWARDED" = 0 ]; then
        FORWARDED=1
        start_forwarder
    fi
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM
"""

_WAIT = """\
# Wait for the step; a trapped signal interrupts `wait` (status > 128), so wait again until the step has ended.
STEP_RC=""
while [ -z "$STEP_RC" ]; do
    SIGNALLED=0
    wait "$STEP_PID"
    rc=$?
    if [ "$SIGNALLED" = 0 ] || [ "$rc" -le 128 ]; then STEP_RC=$rc; fi
done
if [ -n "$FORWARDER_PID" ]; then kill "$FORWARDER_PID" 2>/dev/null; fi
echo "[octo-launch] step exited with status $STEP_RC" | tee -a "$ATTEMPT_DIR/status.txt"
if [ "$STEP_RC" -eq 0 ]; then exit 0; fi
REQUEUE=0
if [ "$STEP_RC" -eq "$REQUEUE_EXIT_CODE" ] || [ "$PREEMPTED" = 1 ]; then REQUEUE=1; fi
if [ "$TERMINATED" = 1 ]; then
    # Slurm is ending the job. At the time limit (a lead too short for one step and a save) the ranks saved within
    # KillWait: continue in a new attempt. A cancelled job stays cancelled (Slurm reports Reason=None for scancel),
    # and a pre-empted one is requeued by Slurm itself where its PreemptMode says so.
    REASON="$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -o 'Reason=[^ ]*' | head -n 1 || true)"
    if [ "$REASON" = Reason=TimeLimit ]; then REQUEUE=1; else REQUEUE=0; fi
    if [ "$REQUEUE" = 0 ]; then
        echo "[octo-launch] SIGTERM from Slurm (${REASON:-no reason}): not requeueing; submitting the job again" \
             "resumes the run from its last complete checkpoint"
    fi
fi
if [ "$REQUEUE" = 1 ]; then
    if [ "$ATTEMPT" -lt "$MAX_REQUEUES" ]; then
        echo "[octo-launch] requeueing job $SLURM_JOB_ID: the next attempt resumes from the last checkpoint"
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
    echo "[octo-launch] not requeueing: $ATTEMPT requeues reached --max-requeues $MAX_REQUEUES"
fi
exit "$STEP_RC"
"""


def render(job: JobSpec, cfg: SlurmConfig, layout: Layout) -> str:
    """The whole sbatch script for ``job`` under ``cfg`` (``layout`` from ``check_layout``)."""
    check_slurm(cfg)
    header = [
        "#!/bin/bash",
        f"# Rendered by `octo launch slurm` (megatron-octo {__version__}).",
        f"# octo {job.command} --recipe {job.recipe}; {layout.line()}",
        f"# image: {cfg.container or '(none: the nodes own Python environment)'}; launcher: {cfg.launcher}",
    ]
    variables = [
        "set -uo pipefail",
        f"RUN_DIR={shlex.quote(str(job.run_dir))}",
        f"LOG_DIR={shlex.quote(str(log_dir(job, cfg)))}",
        f"REQUEUE_EXIT_CODE={REQUEUE_EXIT_CODE}",
        f"MAX_REQUEUES={cfg.max_requeues}",
        'mkdir -p "$RUN_DIR"',
    ]
    parts = [
        "\n".join(header + _directives(job, cfg)),
        "\n".join(variables) + "\n" + _PRELUDE.format(layout=layout.line()).rstrip(),
        "\n".join(_environment(cfg)),
        _RENDEZVOUS.format(base=PORT_BASE, span=PORT_SPAN).rstrip(),
        _SIGNALS.replace("{reforward}", str(REFORWARD_S)).rstrip(),
        "\n".join(_task(job, cfg) + _step(job, cfg, layout)),
        _WAIT.rstrip(),
    ]
    return "\n\n".join(parts) + "\n"


def write_script(text: str, job: JobSpec, cfg: SlurmConfig, overwrite: bool) -> Path:
    """Write the script to ``LOG_DIR/<job name>.sbatch`` (temp name + rename); refuse to replace one."""
    path = log_dir(job, cfg) / f"{job_name(job, cfg)}.sbatch"
    if cfg.log_dir:
        check_writable_dir(path.parent, "--log-dir")
    else:
        check_writable_dir(job.run_dir, "--run-dir")
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists (a job was rendered for this run): pass --overwrite to "
            f"replace the script (the run itself is kept and resumes)"
        )
    atomic_write_text(path, text)
    path.chmod(0o755)
    return path


def submit(path: Path, sbatch: Optional[str] = None) -> str:
    """``sbatch --parsable PATH``; returns the job id. ``LaunchError`` when sbatch is missing or refuses."""
    sbatch = sbatch or shutil.which("sbatch")
    if not sbatch:
        raise LaunchError("sbatch is not on PATH: run on a Slurm login node, or pass --dry-run to print the script")
    proc = subprocess.run([sbatch, "--parsable", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise LaunchError(f"sbatch refused {path}: {reason}")
    return proc.stdout.strip().split(";")[0]
