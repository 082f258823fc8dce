"""examples/: every launch script renders its job through `octo launch slurm --dry-run` with the node count it
states, the rendered jobs parse, and every job script under examples/ parses."""

import os
import subprocess
import sys

import pytest

from tests.launch.helpers import ROOT, bash_n, directives
from tests.launch.test_containers import tool

# (script and its arguments, recipe, nodes, world, TP, DP): 8 GPUs a node; DP = nodes x 8 / TP, worked by hand.
EXAMPLES = [
    (["1b-stable.sh"], "octothinker-1b-stable", 4, 32, 1, 32),
    (["3b-stable.sh"], "octothinker-3b-stable", 8, 64, 1, 64),
    (["8b-stable.sh"], "octothinker-8b-stable", 16, 128, 1, 128),
    *[(["decay.sh", size, branch], f"octothinker-{size}-decay-{branch}", nodes, nodes * 8, tp, nodes * 8 // tp)
      for size, nodes, tp in (("1b", 4, 1), ("3b", 8, 1), ("8b", 16, 1)) for branch in ("long", "short", "hybrid")],
    (["grpo.sh"], "octothinker-3b-grpo-long", 1, 8, 1, 8),
    (["grpo.sh", "hybrid"], "octothinker-3b-grpo", 1, 8, 1, 8),
]


@pytest.fixture(scope="module")
def octo_on_path(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "octo").write_text(f'#!/bin/sh\nexec {sys.executable} -m megatron_octo "$@"\n')
    (bin_dir / "octo").chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONWARNINGS="ignore",
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.parametrize("argv, recipe, nodes, world, tp, dp", EXAMPLES, ids=lambda v: None)
def test_example_renders_its_stated_layout(octo_on_path, tmp_path, argv, recipe, nodes, world, tp, dp):
    env = dict(octo_on_path, OCTO_RUNS=str(tmp_path / "runs"), OCTO_IMAGE="/images/octo.sqsh")
    proc = subprocess.run(["bash", f"examples/{argv[0]}", *argv[1:], "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    script = proc.stdout
    d = directives(script)
    assert int(d["nodes"]) == nodes and int(d["nodes"]) * int(d["gpus-per-node"]) == world
    assert f"--recipe {recipe};" in script and f"world {world} = TP {tp} x PP 1 x CP 1 x DP {dp}" in script
    assert "--container-image=/images/octo.sqsh" in script
    assert bash_n(script, tmp_path).returncode == 0
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_example_scripts_parse_and_pass_shellcheck():
    scripts = sorted(p.name for p in (ROOT / "examples").iterdir() if p.suffix == ".sh")
    assert {"1b-stable.sh", "3b-stable.sh", "8b-stable.sh", "decay.sh", "grpo.sh", "chain.sh"} <= set(scripts)
    for name in scripts:
        assert subprocess.run(["bash", "-n", f"examples/{name}"], cwd=ROOT).returncode == 0, name
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run([shellcheck, "-x", *[f"examples/{n}" for n in scripts]], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout


def test_every_job_script_under_examples_parses():
    """The NeMo-Aligner PPO job (examples/rl/nemo_aligner, issue 8) included: it runs in the aligner image."""
    scripts = sorted(p for p in (ROOT / "examples").rglob("*") if p.suffix in (".sh", ".sbatch"))
    assert scripts
    for path in scripts:
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, path


def test_decay_refuses_an_unknown_branch(octo_on_path):
    proc = subprocess.run(["bash", "examples/decay.sh", "3b", "medium", "--dry-run"], cwd=ROOT, env=octo_on_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "BRANCH 'medium'" in proc.stderr


def test_chain_holds_the_three_decay_branches_on_the_stable_job(octo_on_path, tmp_path):
    env = dict(octo_on_path, OCTO_RUNS=str(tmp_path / "runs"), OCTO_IMAGE="/images/octo.sqsh")
    proc = subprocess.run(["bash", "examples/chain.sh", "3b", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    scripts = ["#!/bin/bash" + part for part in proc.stdout.split("#!/bin/bash")[1:]]
    assert [s.split("--recipe ", 1)[1].split(";", 1)[0] for s in scripts] == [
        "octothinker-3b-stable", "octothinker-3b-decay-long", "octothinker-3b-decay-short",
        "octothinker-3b-decay-hybrid"]
    assert "dependency" not in directives(scripts[0])
    for branch, script in zip(("long", "short", "hybrid"), scripts[1:]):
        d = directives(script)
        assert d["dependency"] == "afterok:STABLE_JOB_ID" and d["kill-on-invalid-dep"] == "yes"
        assert f"checkpoint.branch_from={tmp_path}/runs/3b-stable" in script and f"3b-decay-{branch}" in script
    assert not (tmp_path / "runs").exists()
