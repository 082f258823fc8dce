"""`octo launch slurm`: the rendered sbatch script parses, asks for what the layout needs, and is written and
submitted the way the output rules say. Layout figures are worked out by hand in each case."""

import os
import stat
import subprocess

import pytest

from megatron_octo.cli import main
from megatron_octo.config.loader import ConfigError
from megatron_octo.launch import LaunchError
from megatron_octo.training.signals import REQUEUE_EXIT_CODE
from tests.launch.helpers import bash_n, directives, octo, rendered, task_program


@pytest.mark.parametrize("launcher", ["srun", "torchrun"])
def test_rendered_script_and_its_task_program_pass_bash_n(tmp_path, launcher):
    script, _ = rendered("octothinker-8b-stable", 4, 8, "/runs/8b stable", ["train.iters=10"], launcher=launcher,
                         container="nvcr.io#nvidia/pytorch:26.09-py3", mounts=["/lustre/data", "/a:/b:ro"],
                         account="acct", partition="batch", qos="high", cpus_per_node=96, socket_ifname="ib0",
                         env={"NCCL_DEBUG": "INFO"}, sbatch_args=["--constraint=h100"])
    assert bash_n(script, tmp_path).returncode == 0, bash_n(script, tmp_path).stderr
    assert bash_n(task_program(script), tmp_path, "task.sh").returncode == 0


@pytest.mark.parametrize("recipe, nodes, gpus, tp, dp, accumulation", [
    ("octothinker-1b-stable", 1, 8, 1, 8, 64),   # 512 / (micro 1 x DP 8) = 64
    ("octothinker-3b-stable", 4, 8, 1, 32, 16),  # 512 / (1 x 32) = 16
    ("octothinker-8b-stable", 4, 8, 1, 32, 16),  # TP 1 (recompute instead): DP = 32; 512 / 32 = 16
    ("octothinker-8b-decay-long", 2, 8, 1, 16, 32),
])
def test_directives_and_world_size_agree_with_the_layout(tmp_path, recipe, nodes, gpus, tp, dp, accumulation):
    script, layout = rendered(recipe, nodes, gpus, tmp_path / "run")
    d = directives(script)
    assert int(d["nodes"]) == nodes and int(d["gpus-per-node"]) == gpus and int(d["ntasks-per-node"]) == gpus
    assert int(d["nodes"]) * int(d["ntasks-per-node"]) == layout.world == tp * 1 * 1 * dp
    assert (layout.tp, layout.pp, layout.cp, layout.dp) == (tp, 1, 1, dp)
    assert f"world {nodes * gpus} = TP {tp} x PP 1 x CP 1 x DP {dp}" in script
    assert f"x {accumulation} accumulation" in script
    assert 'WORLD_SIZE="$SLURM_NTASKS"' in task_program(script)


def test_torchrun_launcher_runs_one_task_per_node_with_static_rendezvous(tmp_path):
    script, layout = rendered("octothinker-8b-stable", 4, 8, tmp_path / "run", launcher="torchrun")
    d, task = directives(script), task_program(script)
    assert int(d["ntasks-per-node"]) == 1 and int(d["gpus-per-node"]) == 8
    assert '--nnodes="$SLURM_NNODES"' in task and "--nproc-per-node=8" in task and 4 * 8 == layout.world
    assert '--node-rank="$SLURM_NODEID"' in task and '--master-addr="$MASTER_ADDR"' in task
    assert 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in script


def test_preemption_directives_and_requeue(tmp_path):
    script, _ = rendered("octothinker-3b-stable", 2, 8, tmp_path / "run", time="1-00:00:00", signal_lead_s=600,
                         max_requeues=5)
    d = directives(script)
    assert d["signal"] == "B:USR1@600" and d["requeue"] is True and d["time"] == "1-00:00:00"
    assert d["open-mode"] == "append" and d["output"] == f"{tmp_path / 'run'}/slurm/%x-%j.out"
    assert f"REQUEUE_EXIT_CODE={REQUEUE_EXIT_CODE}" in script and "MAX_REQUEUES=5" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script and 'scancel --signal=USR1 "$SLURM_JOB_ID"' in script
    assert "trap '' USR1" in task_program(script)


def test_container_flags_mount_run_dir_and_recipe_paths(tmp_path):
    script, _ = rendered("octothinker-3b-decay-short", 1, 8, tmp_path / "run",
                         [f"checkpoint.branch_from={tmp_path}/stable:1000"], container="/img/octo.sqsh",
                         mounts=["/lustre:/data"])
    mounts = script.split("--container-mounts=", 1)[1].split(" ", 1)[0].replace("'", "")
    assert mounts == (f"/lustre:/data,{tmp_path}/run:{tmp_path}/run,{tmp_path}/stable:{tmp_path}/stable,"
                      '"$SLURM_SUBMIT_DIR:$SLURM_SUBMIT_DIR"')
    assert "--container-image=/img/octo.sqsh" in script and "--no-container-mount-home" in script
    assert '--container-workdir="$SLURM_SUBMIT_DIR"' in script
    plain, _ = rendered("octothinker-3b-stable", 1, 8, tmp_path / "run")
    assert "--container" not in plain


def test_environment_defaults_yield_to_the_submit_environment(tmp_path):
    script, _ = rendered("octothinker-3b-stable", 1, 8, tmp_path / "run", socket_ifname="ib0",
                         env={"NCCL_DEBUG": "INFO", "HF_HOME": "/cache/hf"})
    assert 'export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"' in script
    assert "export NCCL_DEBUG=INFO" in script and "NCCL_DEBUG:-" not in script
    assert "export NCCL_SOCKET_IFNAME=ib0" in script and "export GLOO_SOCKET_IFNAME=ib0" in script
    assert "export HF_HOME=/cache/hf" in script


@pytest.mark.parametrize("kwargs, words", [
    ({"nodes": 1, "gpus": 3, "overrides": ["parallel.tp=2"]}, "3 GPUs is not a multiple of"),
    ({"nodes": 3, "gpus": 8, "recipe": "octothinker-3b-stable"}, "1 x 24 = 24"),  # 512 % 24 != 0
    ({"nodes": 1, "gpus": 8, "time": "4h"}, "is not a Slurm time limit"),
    ({"nodes": 1, "gpus": 8, "time": "00:05:00", "signal_lead_s": 300}, "shorter than --time"),
    ({"nodes": 1, "gpus": 8, "mounts": ["/a,/b"]}, "without commas"),
    ({"nodes": 1, "gpus": 8, "cpus_per_node": 4}, "fewer than the 8 tasks"),
])
def test_bad_layouts_and_options_fail_with_one_line(tmp_path, kwargs, words):
    kwargs = dict(kwargs)
    recipe = kwargs.pop("recipe", "octothinker-3b-stable")
    nodes, gpus = kwargs.pop("nodes"), kwargs.pop("gpus")
    with pytest.raises(LaunchError) as err:
        rendered(recipe, nodes, gpus, tmp_path / "run", **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_unknown_recipe_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        rendered("octothinker-3b-stabel", 1, 8, tmp_path / "run")


def cli(capsys, *args):
    """``octo ARGS`` in this process: (exit status, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_dry_run_prints_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = cli(capsys, "launch", "slurm", "--recipe", "octothinker-3b-stable", "--nodes", "2",
                         "--gpus-per-node", "8", "--run-dir", str(run), "--dry-run", "train.iters=100")
    assert code == 0, err
    assert out.startswith("#!/bin/bash") and "train.iters=100" in out
    assert not run.exists()


def test_cli_without_sbatch_is_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = cli(capsys, "launch", "slurm", "--recipe", "octothinker-3b-stable", "--nodes", "1",
                       "--gpus-per-node", "8", "--run-dir", str(tmp_path / "run"))
    assert code == 2 and err == (
        "octo: error: sbatch is not on PATH: run on a Slurm login node, or pass --dry-run to print the script\n")
    assert not (tmp_path / "run").exists()


def test_cli_writes_the_script_and_submits_it_once(tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/sbatch.args\necho "31337;cluster"\n')
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    args = ["launch", "slurm", "--recipe", "octothinker-3b-stable", "--nodes", "1", "--gpus-per-node", "8",
            "--run-dir", str(tmp_path / "run")]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    script = tmp_path / "run" / "slurm" / "octo-octothinker-3b-stable.sbatch"
    assert "submitted job 31337" in out and str(script) in out
    assert (tmp_path / "sbatch.args").read_text().split() == ["--parsable", str(script)]
    assert script.stat().st_mode & stat.S_IXUSR and not list(script.parent.glob(".*.tmp"))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    code, _, err = cli(capsys, *args)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert cli(capsys, *args, "--overwrite")[0] == 0


def test_bad_env_option_is_one_line_error(tmp_path, capsys):
    code, _, err = cli(capsys, "launch", "slurm", "--recipe", "octothinker-3b-stable", "--nodes", "1",
                       "--gpus-per-node", "8", "--env", "NOVALUE", "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "NAME=VALUE" in err


def test_launch_help_lists_both_launchers():
    proc = octo("launch", "--help")
    assert proc.returncode == 0 and "slurm" in proc.stdout and "local" in proc.stdout
    assert "launch" in octo("--help").stdout.split("positional arguments")[0]
