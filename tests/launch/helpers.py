"""Shared by the launch tests: render a job the way `octo launch slurm --dry-run` does, and read its directives."""

import re
import subprocess
import sys
from pathlib import Path

from megatron_octo.launch import JobSpec, SlurmConfig, render, slurm_layout

ROOT = Path(__file__).resolve().parents[2]


def rendered(recipe, nodes, gpus, run_dir, overrides=(), python="python", **slurm):
    job = JobSpec(recipe=recipe, run_dir=Path(run_dir), overrides=list(overrides), python=python)
    cfg = SlurmConfig(nodes=nodes, gpus_per_node=gpus, **slurm)
    layout = slurm_layout(job, cfg)
    return render(job, cfg, layout), layout


def directives(script):
    """``{flag: value}`` of the ``#SBATCH --flag=value`` lines (``True`` for bare flags)."""
    found = {}
    for flag, _, value in re.findall(r"^#SBATCH --([\w-]+)(=(.*))?$", script, re.M):
        found[flag] = value if value else True
    return found


def task_program(script):
    """The per-task shell program between the OCTO_TASK heredoc markers."""
    return script.split("<<'OCTO_TASK' || true\n", 1)[1].split("\nOCTO_TASK\n", 1)[0] + "\n"


def bash_n(text, tmp_path, name="script.sh"):
    path = Path(tmp_path) / name
    path.write_text(text)
    return subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)


def octo(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "megatron_octo", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)
