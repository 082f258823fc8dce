"""``octo launch slurm|local``: a stage as a Slurm job or under torchrun on this node. Defaults come from
``launch.config.SlurmConfig``, which documents each field."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List

from megatron_octo.commands.common import add_overrides, add_recipe, default_of, positive_int
from megatron_octo.config.choices import SLURM_LAUNCHERS, STAGE_COMMANDS

HELP = {
    "launch": "run a stage as a Slurm job or with torchrun on this node",
}
"""One line per command for `octo --help` (the command's parser is built only when it runs)."""


def _launch_job(args, python: str):
    from megatron_octo.launch import JobSpec
    from megatron_octo.launch.layout import absolute_run_dir

    run_dir = args.run_dir or os.path.join("runs", os.path.splitext(os.path.basename(args.recipe))[0])
    return JobSpec(
        recipe=args.recipe,
        run_dir=absolute_run_dir(run_dir),
        command=args.stage,
        overrides=list(args.overrides),
        python=python,
    )


def _key_values(items: List[str]) -> dict:
    from megatron_octo.launch import LaunchError

    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LaunchError(f"--env {item!r} must look like NAME=VALUE, e.g. NCCL_DEBUG=INFO")
        pairs[key] = value
    return pairs


def _cmd_launch_slurm(args) -> int:
    from megatron_octo.launch import SlurmConfig, launch_slurm

    cfg = SlurmConfig(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        time=args.time,
        account=args.account,
        partition=args.partition,
        qos=args.qos,
        job_name=args.job_name,
        launcher=args.launcher,
        container=args.container,
        mounts=args.mount,
        signal_lead_s=args.signal_lead,
        max_requeues=args.max_requeues,
        cpus_per_node=args.cpus_per_node,
        exclusive=not args.shared,
        socket_ifname=args.socket_ifname,
        env=_key_values(args.env),
        sbatch_args=args.sbatch_arg,
        log_dir=args.log_dir,
        ranks_per_node=args.ranks_per_node,
        dependency=args.dependency,
    )
    python = args.python or ("python" if args.container else sys.executable)
    result = launch_slurm(_launch_job(args, python), cfg, dry_run=args.dry_run, overwrite=args.overwrite)
    if args.dry_run:
        sys.stdout.write(result.script)
    elif args.parsable:
        print(result.job_id)
    else:
        assert result.path is not None  # a submitted job's script was written
        print(
            f"submitted job {result.job_id}: {result.layout.line()}; script {result.path}, output in "
            f"{result.path.parent}/{result.path.stem}-{result.job_id}.out"
        )
    return 0


def _cmd_launch_local(args) -> int:
    from megatron_octo.launch import LocalConfig, launch_local

    return launch_local(_launch_job(args, sys.executable), LocalConfig(nproc=args.nproc), dry_run=args.dry_run)


def _add_launch_common(p) -> None:
    add_recipe(p)
    p.add_argument(
        "--run-dir",
        default=None,
        help="run directory, the same for every attempt so a requeued job resumes (default: runs/RECIPE)",
    )
    p.add_argument(
        "--command",
        dest="stage",
        default="train",
        choices=STAGE_COMMANDS,
        help="octo subcommand the ranks run (default: train)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would run; write and start nothing")
    add_overrides(p)


def _add_slurm_parser(launch_sub) -> None:
    from megatron_octo.launch.config import SlurmConfig

    def d(name):
        return default_of(SlurmConfig, name)

    p = launch_sub.add_parser(
        "slurm",
        help="render an sbatch script for a stage and submit it (pyxis/enroot container)",
        description=(
            "Check the recipe's TP x PP x CP and global batch against --nodes x --gpus-per-node, render an sbatch "
            "script (directives, rendezvous on the first node, container flags and mounts, NCCL defaults, logs "
            "in RUN_DIR/slurm), then print it (--dry-run) or write it to RUN_DIR/slurm/JOB.sbatch and submit it. "
            "Before the time limit Slurm signals the job; the ranks save a checkpoint and the job requeues "
            "itself, and the next attempt resumes from that checkpoint."
        ),
        epilog=(
            "examples:\n  octo launch slurm --recipe octothinker-3b-stable --nodes 4 --gpus-per-node 8 \\\n"
            "      --container /shared/images/megatron-octo.sqsh --account ACCT --partition batch --dry-run\n"
            "  octo launch slurm --recipe octothinker-3b-decay-long --nodes 2 --gpus-per-node 8 \\\n"
            "      --run-dir runs/3b-long --dependency afterok:STABLE_JOB_ID "
            "checkpoint.branch_from=$PWD/runs/3b-stable\n"
            "  octo launch slurm --recipe tiny-cpu --nodes 1 --gpus-per-node 0 --ranks-per-node 2  # CPU, gloo"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=positive_int, required=True, help="nodes of the job")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        required=True,
        help="GPUs used per node (one rank each); 0 for a CPU job over gloo (with --ranks-per-node)",
    )
    p.add_argument(
        "--ranks-per-node",
        type=int,
        default=d("ranks_per_node"),
        metavar="N",
        help="training processes per node (default: one per GPU; required with --gpus-per-node 0)",
    )
    p.add_argument(
        "--container",
        default=d("container"),
        metavar="IMAGE",
        help="pyxis image: registry URI (nvcr.io#org/image:tag) or .sqsh file (default: none)",
    )
    p.add_argument(
        "--mount",
        action="append",
        default=d("mounts"),
        metavar="SRC[:DST[:FLAGS]]",
        help="extra container mount (repeatable); the run dir, submit dir, $OCTO_DATA and the recipe's "
        "checkpoint/tokenizer paths are mounted already",
    )
    p.add_argument("--time", default=d("time"), help="time limit (default: %(default)s)")
    p.add_argument("--account", default=d("account"), help="Slurm account")
    p.add_argument("--partition", default=d("partition"), help="Slurm partition")
    p.add_argument("--qos", default=d("qos"), help="Slurm QOS")
    p.add_argument("--job-name", default=d("job_name"), help="job name (default: octo-RECIPE)")
    p.add_argument(
        "--launcher",
        default=d("launcher"),
        choices=SLURM_LAUNCHERS,
        help="srun: one task per GPU; torchrun: one task per node running torchrun (default: %(default)s)",
    )
    p.add_argument(
        "--signal-lead",
        type=int,
        default=d("signal_lead_s"),
        metavar="SECONDS",
        help="signal the job this long before its time limit to save and requeue (default: %(default)s)",
    )
    p.add_argument(
        "--max-requeues", type=int, default=d("max_requeues"), help="requeue at most this often (default: %(default)s)"
    )
    p.add_argument(
        "--cpus-per-node", type=positive_int, default=d("cpus_per_node"), help="CPU cores per node (default: cluster's)"
    )
    p.add_argument(
        "--shared",
        action="store_true",
        default=not d("exclusive"),
        help="do not ask for whole nodes (no --exclusive, --mem=0)",
    )
    p.add_argument(
        "--socket-ifname",
        default=d("socket_ifname"),
        metavar="IFACE",
        help="NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME for the bootstrap sockets",
    )
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="export to the ranks (repeatable)")
    p.add_argument(
        "--sbatch-arg",
        action="append",
        default=d("sbatch_args"),
        metavar="ARG",
        help="extra #SBATCH directive, e.g. --constraint=h100 (repeatable; write --sbatch-arg=--x=y)",
    )
    p.add_argument("--log-dir", default=d("log_dir"), help="script and job output directory (default: RUN_DIR/slurm)")
    p.add_argument(
        "--dependency",
        default=d("dependency"),
        metavar="SPEC",
        help="Slurm dependency, e.g. afterok:JOBID to start a decay branch once its stable job succeeded",
    )
    p.add_argument(
        "--python",
        default=None,
        help="interpreter on the nodes (default: python in a container, else this interpreter)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier rendered script in the log dir (the run itself is kept and resumes)",
    )
    p.add_argument(
        "--parsable",
        action="store_true",
        help="print only the job id once submitted (as sbatch --parsable), e.g. for --dependency",
    )
    _add_launch_common(p)
    p.set_defaults(func=_cmd_launch_slurm)


def add_parsers(sub) -> None:
    launch = sub.add_parser("launch", help=HELP["launch"])
    launch_sub = launch.add_subparsers(dest="launch_cmd", required=True, metavar="{slurm,local}")
    _add_slurm_parser(launch_sub)
    p = launch_sub.add_parser(
        "local",
        help="run a stage on this node: torchrun with --nproc processes",
        description=(
            "Check the recipe against --nproc processes and run the stage with torchrun --standalone (the command "
            "itself for --nproc 1). SIGTERM or SIGUSR1 sent to this command makes the ranks save and stop; it then "
            "exits with the requeue status (75), and running it again resumes."
        ),
    )
    p.add_argument("--nproc", type=positive_int, required=True, help="processes (GPUs) on this node")
    _add_launch_common(p)
    p.set_defaults(func=_cmd_launch_local)
