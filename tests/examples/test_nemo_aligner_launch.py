"""launch_ppo.sbatch and the group scripts, run with stand-ins for srun / scontrol / sleep / python that record
what they are asked (the Slurm launch tests' approach): inputs given as relative paths reach the groups absolute,
every input folder is mounted, the exported checkpoints' tokenizer folders are passed as overrides, and a missing
input or a silent reward server is one line and exit 2."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "rl" / "nemo_aligner"

SRUN = """#!/bin/bash
# record, then run the group's script (the last argument) like the container would
printf '%s\\n' "$*" >> "$RECORD/srun.log"
case "$*" in *actor.sh*) bash "${@: -1}" ;; esac
"""
PYTHON = """#!/bin/bash
printf '%s\\n' "$@" > "$RECORD/python.argv"
"""


def _bin(tmp: Path) -> Path:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, text in {"srun": SRUN, "python": PYTHON, "sleep": "#!/bin/bash\n",
                       "scontrol": "#!/bin/bash\necho 127.0.0.1\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return bin_dir


def _inputs(tmp: Path) -> dict:
    (tmp / "ckpt" / "actor" / "tokenizer").mkdir(parents=True)
    (tmp / "ckpt" / "critic" / "tokenizer").mkdir(parents=True)
    (tmp / "hf").mkdir()
    (tmp / "data").mkdir()
    (tmp / "data" / "prompts.jsonl").write_text(json.dumps({"text": "x", "answer": "1"}) + "\n")
    return {"ACTOR_NEMO": "ckpt/actor", "CRITIC_NEMO": "ckpt/critic", "HF_MODEL": "hf",
            "PROMPTS": "data/prompts.jsonl"}


def _run(tmp: Path, inputs: dict, port: int, **extra):
    env = {**os.environ, **inputs, "IMAGE": "img.sqsh", "OCTO_REPO": str(REPO), "RECORD": str(tmp),
           "PATH": f"{_bin(tmp)}:{os.environ['PATH']}", "REWARD_PORT": str(port), "GPFS": str(tmp),
           "SLURM_JOB_NODELIST_HET_GROUP_0": "n0", "SLURM_JOB_NODELIST_HET_GROUP_1": "n1",
           "SLURM_JOB_NUM_NODES_HET_GROUP_2": "2", **extra}
    return subprocess.run(["bash", str(EXAMPLES / "launch_ppo.sbatch")], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def reward_port():
    with socket.socket() as server:  # a listening port stands in for the reward server
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_relative_inputs_become_absolute_mounted_and_the_tokenizer_is_overridden(tmp_path, reward_port):
    inputs = _inputs(tmp_path)
    proc = _run(tmp_path, inputs, reward_port)
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "python.argv").read_text().splitlines()
    actor = tmp_path.resolve() / "ckpt" / "actor"
    assert f"pretrained_checkpoint.restore_from_path={actor}" in argv
    assert f"++model.tokenizer.type={actor}/tokenizer" in argv
    assert f"model.ppo.vllm.model_dir={tmp_path.resolve() / 'hf'}" in argv
    srun = (tmp_path / "srun.log").read_text().splitlines()
    assert len(srun) == 3
    mounts = next(a for a in srun[0].split() if a.startswith("--container-mounts="))
    mounted = {m.split(":")[0] for m in mounts.removeprefix("--container-mounts=").split(",")}
    root = tmp_path.resolve()
    assert {str(root / "ckpt" / "actor"), str(root / "ckpt" / "critic"), str(root / "hf"),
            str(root / "data")} <= mounted


def test_a_missing_input_is_one_line(tmp_path, reward_port):
    inputs = {**_inputs(tmp_path), "CRITIC_NEMO": "ckpt/nope"}
    proc = _run(tmp_path, inputs, reward_port)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"launch_ppo.sbatch: CRITIC_NEMO=ckpt/nope does not exist (give a path on the shared filesystem)"]
    assert not (tmp_path / "srun.log").exists()


def test_no_reward_server_stops_the_actor_in_one_line(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = _run(tmp_path, _inputs(tmp_path), port, REWARD_WAIT="1")
    assert proc.returncode == 2  # the actor group's status is the job's (`wait` returns it)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"actor.sh: no reward server at 127.0.0.1:{port}")
    assert not (tmp_path / "python.argv").exists()
