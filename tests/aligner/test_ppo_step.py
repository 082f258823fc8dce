"""NeMo-Aligner 0.7's own PPO and REINFORCE trainers take two steps each on CPU against our exports, our reward
scoring and our generation adapter (``tests/aligner/ppo_run.py`` wires them as NeMo-Aligner's scripts do; what is
replaced and why is listed there and in ``nemo_cpu``).

Transport: where PyTriton is installed (requirements/aligner.txt pins the last release that runs beside NeMo 2.2's
protobuf 3.20), the reward server (``octo serve reward``) and the critic server (``CriticServerTrainer.run_server``)
run as processes of their own and the actor reaches them over HTTP, as in a real job; without it, the same server
functions are called in process (``nemo_cpu.inprocess_pytriton``).

The policy (``make_ppo_fixture``) answers "What is a+b?" with one of three boxed numbers, one of them right, and the
answer's closing brace is the end string, so rewards are +1 or -1 and responses end. Checked with numbers: rewards
not all equal; NeMo-Aligner's own ``is_end`` share above 0; the critic's weights and values move after its update;
after every refit the generation model's log-probs equal the actor's own (``get_inference_log_probs``) for a probe,
and they change between refits as the actor's weights did; the actor's weights change; the checkpoint NeMo wrote
loads back (NeMo's own strategy) with the actor's final weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

pytest.importorskip("nemo.collections.nlp", reason="NeMo is not installed: this runs in the aligner venv "
                                                   "(make test-aligner)")
pytest.importorskip("nemo_aligner", reason="NeMo-Aligner is not installed: make test-aligner")

import torch  # noqa: E402

from tests.aligner import nemo_cpu, ppo_run  # noqa: E402
from tests.aligner.conftest import REPO, main_python  # noqa: E402

pytestmark = pytest.mark.aligner


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo-fixture")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(main_python()), "-m", "tests.aligner.make_ppo_fixture", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def probe(fx):
    """Two prompt + answer rows [2, s] whose log-probs every refit is checked on."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(fx / "hf"))
    rows = [tok("Q: What is 1+1? A: \\boxed{2}").input_ids, tok("Q: What is 2+2? A: \\boxed{3}").input_ids]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [tok.eos_token_id] * (width - len(r)) for r in rows])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, model: str, proc, log, timeout: float = 600) -> None:
    """Until Triton on ``port`` says ``model`` is ready (its HTTP readiness endpoint); fails when the server's
    process ends first or the time runs out (the client would otherwise wait for it for 100 minutes)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"a server exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{model}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"model {model} not ready on port {port} after {timeout} s: {log.read_text()[-3000:]}")


@contextmanager
def servers(fx, out):
    """(reward port, critic port) of the reward and critic servers, each a process of its own serving over
    PyTriton; stopped (their process groups: PyTriton's tritonserver included) on exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    ports = (_free_port(), _free_port())
    commands = {
        "reward": ["-m", "megatron_octo", "serve", "reward", "--answers", str(fx / "answers.jsonl"), "--tokenizer",
                   str(fx / "hf"), "--response-marker", "A:", "--host", "127.0.0.1", "--port", str(ports[0]),
                   "--workers", "1"],
        "critic": ["-m", "tests.aligner.ppo_run", str(fx), str(out / "critic"), str(ports[1])],
    }
    procs = []
    try:
        for name, argv in commands.items():  # both start at once; then both are waited for
            log = out / f"{name}.log"
            with log.open("w") as f:
                procs.append(subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=f,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        for proc, port, model, name in zip(procs, ports, ("reward_model", "critic_save"), commands):
            _wait_for(port, model, proc, out / f"{name}.log")
        yield ports
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def runs(fx, probe, tmp_path_factory):
    """PPO (critic + reward + actor) then REINFORCE (reward + actor), the actors in this process (NeMo and
    Megatron-Core set up once); each run's observations, and the critic's record of its updates."""
    nemo_cpu.apply()
    out = tmp_path_factory.mktemp("ppo-runs")
    if importlib.util.find_spec("pytriton") is not None:
        with servers(fx, out) as ports:
            ppo = ppo_run.run_actor(fx, out / "ppo", "ppo", probe, ports)
            reinforce = ppo_run.run_actor(fx, out / "reinforce", "reinforce", probe, ports)
    else:
        nemo_cpu.inprocess_pytriton()
        scorer, _ = ppo_run.start_reward(fx)
        try:
            ppo_run.start_critic(fx, out / "critic")
            ppo = ppo_run.run_actor(fx, out / "ppo", "ppo", probe)
            reinforce = ppo_run.run_actor(fx, out / "reinforce", "reinforce", probe)
        finally:
            scorer.close()
    critic = json.loads((out / "critic" / "critic_record.json").read_text())
    return {"ppo": ppo, "reinforce": reinforce, "critic": critic, "out": out}


def _metric(run, name):
    """Every value NeMo-Aligner's trainer logged under ``name``, in step order."""
    return [m[name] for _, m in run["metrics"] if name in m]


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_two_steps_with_varied_rewards_and_ended_samples(runs, algo):
    run = runs[algo]
    assert run["trainer"].step == 2
    rewards = run["rewards"]  # as the actor's client received them
    assert set(rewards) <= {-1.0, 1.0} and len(set(rewards)) == 2, rewards  # our math reward, right and wrong
    ended = _metric(run, "train_rollouts/fraction_of_samples_properly_ended")  # NeMo-Aligner's is_end share
    assert len(ended) == 2 and all(e > 0 for e in ended), ended
    assert len(_metric(run, "train_optim/loss")) == 2  # one actor update per step (4 rollouts, batch 4)


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_every_refit_gives_the_generation_model_the_actors_weights(runs, algo):
    """Refits before both steps' rollouts and the validation's: after each, the generation model's log-probs of the
    probe equal the actor's own; between refits they change, as the trained weights say."""
    refits = runs[algo]["refits"]
    assert [r["refits"] for r in refits] == [1, 2, 3]
    for r in refits:
        torch.testing.assert_close(r["engine"], r["actor"], atol=1e-5, rtol=1e-5)
    assert (refits[1]["engine"] - refits[0]["engine"]).abs().max() > 1e-3  # step 1 trained the actor
    assert (refits[2]["engine"] - refits[1]["engine"]).abs().max() > 1e-3  # and step 2


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_actor_weights_moved(runs, algo):
    run = runs[algo]
    moved = [k for k in run["initial"] if not torch.equal(run["initial"][k], run["final"][k])]
    assert "output_layer.weight" in moved and len(moved) >= len(run["initial"]) // 2


def test_critic_update(runs):
    """NeMo-Aligner's critic trainer updated the critic once a step: the value head left zero (the export's) at the
    first update, the trunk moved at the second (at the first its gradient is zero: it flows through the zero head),
    and the values it gave the actor in step 2 are not all zero."""
    record = runs["critic"]
    assert record[0]["head_nonzero"] == 0 and len(record) == 3, record  # before, and after each of the 2 steps
    assert all(r["head_nonzero"] > 0 and r["loss"] > 0 for r in record[1:]), record
    assert [r["norm_moved"] for r in record] == [False, False, True], record
    values_std = _metric(runs["ppo"], "train_rollouts/values_std")
    assert values_std[0] == 0 and values_std[1] > 0, values_std  # zero head at step 1, trained at step 2


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_checkpoint_loads_back_with_the_final_weights(runs, algo):
    """The step-2 checkpoint NeMo-Aligner saved, loaded by NeMo's own strategy (Megatron-Core dist checkpointing) for
    the actor: every weight equals the actor's after the run."""
    run = runs[algo]
    ckpt = runs["out"] / algo / "checkpoints" / "megatron_gpt-step=2"
    assert (ckpt / "metadata.json").is_file()
    actor = run["actor"]
    loaded = actor.trainer.strategy.load_checkpoint(str(ckpt))["state_dict"]
    for key, want in run["final"].items():
        assert torch.equal(loaded["model." + key].float(), want.float()), key
    if algo == "ppo":
        assert (runs["out"] / "critic" / "checkpoints").is_dir()
