"""`octo launch slurm` for CPU jobs (`--gpus-per-node 0 --ranks-per-node N`), job dependencies and --parsable, as
rendered. The same jobs run against a real Slurm in tests/launch/slurm (`make test-slurm`)."""

import os
import subprocess

import pytest

from megatron_octo.cli import main
from megatron_octo.launch import LaunchError
from tests.launch.helpers import bash_n, directives, rendered, task_program


def test_cpu_job_asks_for_no_gpus_and_runs_one_task_per_rank(tmp_path):
    script, layout = rendered("tiny-cpu", 2, 0, tmp_path / "run", ["parallel.tp=2"], ranks_per_node=2,
                              cpus_per_node=8)
    d = directives(script)
    assert not [flag for flag in d if "gpu" in flag]
    assert (int(d["nodes"]), int(d["ntasks-per-node"]), int(d["cpus-per-task"])) == (2, 2, 4)  # 8 cores / 2 ranks
    assert (layout.world, layout.tp, layout.dp) == (4, 2, 2)  # 2 nodes x 2 ranks = TP 2 x DP 2
    assert "world 4 = TP 2 x PP 1 x CP 1 x DP 2" in script
    assert 'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"' in script
    assert "NCCL" not in script.split("# Rendezvous", 1)[0] and "CUDA_DEVICE_MAX_CONNECTIONS" not in script
    assert 'WORLD_SIZE="$SLURM_NTASKS"' in task_program(script)
    assert bash_n(script, tmp_path).returncode == 0


def test_cpu_job_under_torchrun_starts_ranks_per_node_processes(tmp_path):
    script, _ = rendered("tiny-cpu", 1, 0, tmp_path / "run", ranks_per_node=4, launcher="torchrun")
    assert int(directives(script)["ntasks-per-node"]) == 1 and "--nproc-per-node=4" in task_program(script)


def test_gpu_job_keeps_one_rank_per_gpu(tmp_path):
    script, layout = rendered("octothinker-3b-stable", 2, 8, tmp_path / "run", ranks_per_node=8)
    assert int(directives(script)["gpus-per-node"]) == 8 and layout.world == 16


@pytest.mark.parametrize("gpus, kwargs, words", [
    (0, {}, "--gpus-per-node 0 (a CPU job) needs --ranks-per-node N"),
    (0, {"ranks_per_node": 0}, "--ranks-per-node 0 must be >= 1"),
    (-1, {}, "--gpus-per-node -1 must be >= 0"),
    (8, {"ranks_per_node": 4}, "--ranks-per-node 4 differs from --gpus-per-node 8"),
    (0, {"ranks_per_node": 3}, "--nodes 1 x --ranks-per-node 3 (CPU) = 3 ranks is not a multiple of"),
    (0, {"ranks_per_node": 2, "cpus_per_node": 1}, "fewer than the 2 tasks"),
])
def test_bad_cpu_layouts_fail_with_one_line(tmp_path, gpus, kwargs, words):
    overrides = ["parallel.tp=2"] if "multiple" in words else []
    with pytest.raises(LaunchError) as err:
        rendered("tiny-cpu", 1, gpus, tmp_path / "run", overrides, **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_dependency_becomes_a_directive(tmp_path):
    script, _ = rendered("octothinker-3b-decay-long", 1, 8, tmp_path / "run", dependency="afterok:1234")
    assert directives(script)["dependency"] == "afterok:1234"
    assert "dependency" not in directives(rendered("octothinker-3b-stable", 1, 8, tmp_path / "run")[0])


def test_cli_cpu_job_without_ranks_is_one_line_error(tmp_path, capsys):
    code = main(["launch", "slurm", "--recipe", "tiny-cpu", "--nodes", "1", "--gpus-per-node", "0", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--ranks-per-node" in err


def test_cli_parsable_prints_only_the_job_id(tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/bash\necho "4711;cluster"\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code = main(["launch", "slurm", "--recipe", "tiny-cpu", "--nodes", "1", "--gpus-per-node", "0",
                 "--ranks-per-node", "2", "--run-dir", str(tmp_path / "run"), "--parsable",
                 "--dependency", "afterok:4710"])
    assert code == 0 and capsys.readouterr().out == "4711\n"
    script = (tmp_path / "run" / "slurm" / "octo-tiny-cpu.sbatch").read_text()
    assert "#SBATCH --dependency=afterok:4710" in script


def test_the_test_clusters_scripts_parse_and_pass_shellcheck():
    """tests/launch/slurm/{run,cluster}.sh start and stop the real cluster of `make test-slurm`."""
    from tests.launch.helpers import ROOT
    from tests.launch.test_containers import tool

    scripts = [ROOT / "tests" / "launch" / "slurm" / name for name in ("run.sh", "cluster.sh")]
    for path in scripts:
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, path
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
