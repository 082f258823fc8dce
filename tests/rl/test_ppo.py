"""PPO with a critic on the toy task: the critic (the policy's trunk with a zero-initialized value head, its own
optimizer) learns the returns, the policy keeps engine and trainer together, and a resumed run, critic
checkpoint included, repeats the uninterrupted one."""

from __future__ import annotations

import pytest

from tests.rl.conftest import run_octo_rl, toy_args

PPO = ["rl.algorithm=ppo", "rl.critic_lr=3e-3", "schedule.lr=3e-3", "schedule.min_lr=3e-3", "train.iters=6"]


@pytest.fixture(scope="module")
def straight(toy_model, tmp_path_factory):
    return run_octo_rl(tmp_path_factory.mktemp("ppo"), toy_args(toy_model) + PPO)[1]


def test_critic_learns_the_returns(straight):
    # the head starts at 0 and rewards are close to -1: the first value loss is about 0.5 * 1^2 = 0.5
    assert straight[0]["value_loss"] == pytest.approx(0.5, abs=0.05)
    assert straight[-1]["value_loss"] < straight[0]["value_loss"] / 3
    for r in straight:
        assert 1.0 <= r["logprob_mismatch"] < 1.001 and r["critic_skipped"] == 0.0
        assert r["time_values_s"] >= 0.0 and 0.0 <= r["vf_clip_fraction"] <= 1.0


def test_ppo_resume_restores_the_critic(straight, toy_model, tmp_path):
    run_dir = tmp_path / "resumed"
    run_octo_rl(run_dir, toy_args(toy_model) + PPO + ["train.exit_interval=3"])
    assert (run_dir / "critic_checkpoints" / "iter_0000003").is_dir()
    _, resumed = run_octo_rl(run_dir, toy_args(toy_model) + PPO + ["train.exit_interval=3"])
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for a, b in zip(straight, resumed):
        assert a["reward_mean"] == b["reward_mean"], a["step"]
        assert a["value_loss"] == pytest.approx(b["value_loss"], rel=1e-5, abs=1e-8)
        assert a["pg_loss"] == pytest.approx(b["pg_loss"], rel=1e-5, abs=1e-8)
