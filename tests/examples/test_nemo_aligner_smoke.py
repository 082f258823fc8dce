"""examples/rl/nemo_aligner/smoke_1gpu.sh run with a stand-in ``python`` that records each call (the launch tests'
approach; the GPU run itself needs the aligner image), its Hydra overrides composed over NeMo-Aligner's configs, and
smoke_check.py on TensorBoard events written here."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.examples.test_nemo_aligner_examples import _nemo_aligner_conf, check_sampler_rules

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "rl" / "nemo_aligner"
SMOKE = EXAMPLES / "smoke_1gpu.sh"
PYTHON = """#!/bin/bash
# one file per call: its arguments, one a line
f="$(mktemp "$RECORD/call.XXXXXX")"
printf '%s\\n' "$@" > "$f"
"""


@pytest.fixture
def ports():
    socks = []
    for _ in range(2):  # listening sockets stand in for the reward and critic servers
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        socks.append(s)
    yield [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()


def _setup(tmp: Path, inputs=("hf", "actor", "critic", "prompts.jsonl", "answers.jsonl")):
    work, gpfs, record, bin_dir = tmp / "work", tmp / "NeMo-Aligner", tmp / "record", tmp / "bin"
    for d in (work, gpfs / "examples" / "nlp" / "gpt", record, bin_dir):
        d.mkdir(parents=True)
    (gpfs / "examples" / "nlp" / "gpt" / "train_gpt_ppo_actor.py").write_text("")
    for name in inputs:
        (work / name).mkdir() if "." not in name else (work / name).write_text("{}\n")
    (bin_dir / "python").write_text(PYTHON)
    (bin_dir / "python").chmod(stat.S_IRWXU)
    return work, gpfs, record, bin_dir


def _run(tmp, work, gpfs, record, bin_dir, ports, **extra):
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record), "GPFS": str(gpfs),
           "REWARD_PORT": str(ports[0]), "CRITIC_PORT": str(ports[1]), "SERVER_WAIT": "5", **extra}
    return subprocess.run(["bash", str(SMOKE), "run", str(work)], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=60)


def _calls(record: Path) -> dict:
    """Recorded python calls by what they run."""
    calls = {}
    for f in record.glob("call.*"):
        argv = f.read_text().splitlines()
        key = next((k for k in ("serve_ppo_critic.py", "train_gpt_ppo_actor.py", "train_gpt_reinforce_actor.py",
                                "smoke_check.py", "reward") if any(k in a for a in argv)), "?")
        calls[key] = argv
    return calls


def _overrides(argv):
    return {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if "=" in a and not a.startswith("-")}


def test_run_starts_both_servers_then_both_actors_then_checks(tmp_path, ports):
    work, gpfs, record, bin_dir = _setup(tmp_path)
    proc = _run(tmp_path, work, gpfs, record, bin_dir, ports)
    assert proc.returncode == 0, proc.stderr
    calls = _calls(record)
    assert set(calls) == {"reward", "serve_ppo_critic.py", "train_gpt_ppo_actor.py", "train_gpt_reinforce_actor.py",
                          "smoke_check.py"}
    reward = calls["reward"]
    assert reward[:3] == ["-m", "megatron_octo", "serve"] and reward[reward.index("--answers") + 1] == \
        f"{work}/answers.jsonl" and reward[reward.index("--response-marker") + 1] == "A:"
    critic = calls["serve_ppo_critic.py"]
    assert critic[:3] == ["-u", "-m", "megatron_octo.serve.aligner_adapter"]  # the critic-server fix applies
    assert _overrides(critic)["trainer.ppo.port"] == str(ports[1])
    assert _overrides(critic)["pretrained_checkpoint.restore_from_path"] == f"{work}/critic"
    for script, algo in (("train_gpt_ppo_actor.py", "ppo"), ("train_gpt_reinforce_actor.py", "reinforce")):
        argv = calls[script]
        assert argv[:4] == ["-u", "-m", "megatron_octo.serve.aligner_adapter", f"{gpfs}/examples/nlp/gpt/{script}"]
        o = _overrides(argv)
        assert o[f"trainer.{algo}.max_steps"] == "2" and o["trainer.devices"] == "1"
        assert o[f"model.{algo}.vllm.model_dir"] == f"{work}/hf"
        assert o["exp_manager.explicit_log_dir"] == f"{work}/results/{algo}"
    assert _overrides(calls["train_gpt_ppo_actor.py"])["remote_critic_rm.reward_model.port"] == str(ports[0])
    assert calls["smoke_check.py"] == [str(EXAMPLES / "smoke_check.py"), f"{work}/results"]


def test_a_missing_input_is_one_line_and_nothing_runs(tmp_path, ports):
    work, gpfs, record, bin_dir = _setup(tmp_path, inputs=("hf", "actor", "prompts.jsonl", "answers.jsonl"))
    proc = _run(tmp_path, work, gpfs, record, bin_dir, ports)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"smoke_1gpu.sh: {work}/critic is missing: run 'smoke_1gpu.sh prepare {work}' with the main stack first"]
    assert not list(record.glob("call.*"))


def test_silent_servers_stop_the_run_in_one_line(tmp_path):
    work, gpfs, record, bin_dir = _setup(tmp_path)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = _run(tmp_path, work, gpfs, record, bin_dir, [port, port], SERVER_WAIT="1")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"smoke_1gpu.sh: nothing listens on port {port} after 1 s")
    assert set(_calls(record)) == {"reward", "serve_ppo_critic.py"}  # no actor started


def test_the_smoke_overrides_compose_over_nemo_aligner_and_divide(tmp_path, ports):
    """The actors' overrides as recorded, composed with Hydra over our YAMLs and NeMo-Aligner's: NeMo's sampler
    rules hold at one GPU. Needs NeMo-Aligner's configs (NEMO_ALIGNER_CONF) and hydra (the aligner venv)."""
    pytest.importorskip("hydra", reason="hydra-core is not installed here (the aligner venv has it)")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = _nemo_aligner_conf()
    work, gpfs, record, bin_dir = _setup(tmp_path)
    (gpfs / "examples" / "nlp" / "gpt" / "conf").symlink_to(conf)
    assert _run(tmp_path, work, gpfs, record, bin_dir, ports).returncode == 0
    calls = _calls(record)
    for name, resolver in (("subtract", lambda a, b: a - b), ("int_div", lambda a, b: a // b),
                           ("multiply", lambda a, b: a * b)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    for script, algo, config in (("train_gpt_ppo_actor.py", "ppo", "actor"),
                                 ("train_gpt_reinforce_actor.py", "reinforce", "reinforce")):
        argv = calls[script]
        overrides = argv[argv.index("--config-name") + 2:]
        with initialize_config_dir(config_dir=str(EXAMPLES), version_base=None):
            cfg = compose(config_name=config, overrides=overrides)
        resolved = {part: OmegaConf.to_container(cfg[part], resolve=True) for part in ("model", "trainer")}
        assert check_sampler_rules(resolved, algo, dp=1) == []
        assert resolved["trainer"]["max_steps"] == 2 and resolved["model"][algo]["sampling_params"]["end_strings"] \
            == ["}"]
    critic_argv = calls["serve_ppo_critic.py"]
    with initialize_config_dir(config_dir=str(EXAMPLES), version_base=None):
        critic = compose(config_name="critic", overrides=critic_argv[critic_argv.index("--config-name") + 2:])
    assert critic.trainer.ppo.combine_rm_and_critic_server is False


def _events(folder: Path, values: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for tag, series in values.items():
        for step, v in enumerate(series):
            writer.add_scalar(tag, v, step)
    writer.close()


@pytest.mark.parametrize("rewards, failure", [([0.5, -0.5], None), ([-1.0, -1.0], "every reward was -1.0")])
def test_smoke_check_reads_the_logged_figures(tmp_path, rewards, failure):
    pytest.importorskip("tensorboard")

    for algo in ("ppo", "reinforce"):
        _events(tmp_path / algo, {"train_rollouts/rewards": rewards,
                                  "train_rollouts/fraction_of_samples_properly_ended": [1.0, 0.75]})
        (tmp_path / algo / "checkpoints" / "megatron_gpt-step=2-consumed_samples=8").mkdir(parents=True)
    _events(tmp_path / "critic", {"train/loss": [0.3, 0.2]})
    proc = subprocess.run([sys.executable, str(EXAMPLES / "smoke_check.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    if failure is None:
        assert proc.returncode == 0 and proc.stdout.strip().endswith("smoke_1gpu: PASS"), proc.stderr
    else:
        assert proc.returncode == 1
        assert [line for line in proc.stderr.splitlines() if "FAIL" in line] == [
            f"smoke_1gpu: FAIL: ppo: {failure}: the reward server's scores do not vary",
            f"smoke_1gpu: FAIL: reinforce: {failure}: the reward server's scores do not vary"]
