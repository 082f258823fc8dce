"""Acceptance of ``octo rl`` on CPU with the transformers engine: GRPO raises the reward of a toy task by far more
than chance allows, the engine agrees with the trainer on every sampled token (weight sync after each update),
every phase is timed, the final policy is exported to Hugging Face format, and a resumed run repeats the
uninterrupted one."""

from __future__ import annotations

import json
import math

import pytest

from tests.rl.conftest import run_octo_rl, toy_args

PHASES = ("generate", "reward", "advantages", "logprobs", "update", "weight_sync")


@pytest.fixture(scope="module")
def learning_run(toy_model, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("grpo")
    overrides = toy_args(toy_model) + ["train.iters=30", "schedule.lr=3e-3", "schedule.min_lr=3e-3"]
    return run_dir, run_octo_rl(run_dir, overrides)[1]


def test_grpo_raises_the_toy_reward_beyond_chance(learning_run):
    _, records = learning_run
    assert [r["step"] for r in records] == list(range(1, 31))
    first = sum(r["reward_mean"] for r in records[:5]) / 5
    last = sum(r["reward_mean"] for r in records[-5:]) / 5
    # 5 steps x 64 responses on each side, rewards in [-1, 1] (sd <= 1): if nothing were learned, the difference
    # of the two means would have a standard error of at most sqrt(1/320 + 1/320) = 0.079; ask for 5 of them.
    assert last - first > 5 * math.sqrt(2 / 320), (first, last)
    assert records[-1]["accuracy"] > records[0]["accuracy"]


def test_engine_and_trainer_agree_after_every_sync(learning_run):
    _, records = learning_run
    for r in records:
        # mean over sampled tokens of exp|engine log-prob - trainer log-prob|: 1 means identical weights
        assert 1.0 <= r["logprob_mismatch"] < 1.001, r
        assert 0.0 <= r["clip_fraction"] <= 1.0 and math.isfinite(r["grad_norm"]) and r["skipped"] == 0.0


def test_metrics_and_phase_times(learning_run):
    _, records = learning_run
    r = records[0]
    assert r["responses"] == 8 * 8  # tiny-cpu-grpo: 8 prompts x 8 rollouts
    assert 0 < r["response_length_mean"] <= r["response_length_max"] <= 24  # rl.rollout.max_response_tokens
    assert 0.0 <= r["truncated_fraction"] <= 1.0 and r["entropy"] > 0
    for phase in PHASES:
        assert r[f"time_{phase}_s"] >= 0.0
    assert r["tokens_per_s"] > 0


def test_summary_and_hf_export(learning_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, records = learning_run
    summary = json.loads((run_dir / "rl_summary.json").read_text())
    assert summary["reward_first"] == pytest.approx(sum(r["reward_mean"] for r in records[:5]) / 5)
    assert summary["reward_last"] == pytest.approx(sum(r["reward_mean"] for r in records[-5:]) / 5)
    model = AutoModelForCausalLM.from_pretrained(run_dir / "hf", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "hf")
    ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer("w10 w20 w5", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:]
    assert (greedy == 7).float().mean() >= 0.5  # the trained policy says w7 (token id 7)


def test_resume_repeats_the_uninterrupted_run(learning_run, toy_model, tmp_path):
    """Two invocations of two steps each (``train.exit_interval=2`` saves and stops) give the learning run's first
    four steps: prompts and sampling seeds are functions of the step, the optimizer state is checkpointed."""
    _, straight = learning_run
    common = toy_args(toy_model) + ["train.iters=30", "schedule.lr=3e-3", "schedule.min_lr=3e-3",
                                    "train.exit_interval=2"]
    _, part = run_octo_rl(tmp_path / "resumed", common)
    assert [r["step"] for r in part] == [1, 2]
    proc, resumed = run_octo_rl(tmp_path / "resumed", common)
    assert "resumed from" in proc.stdout + proc.stderr
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight[:4], resumed):
        for key in ("reward_mean", "response_length_mean", "response_length_max", "truncated_fraction"):
            assert a[key] == b[key], (key, a["step"])
        assert a["pg_loss"] == pytest.approx(b["pg_loss"], rel=1e-6, abs=1e-9)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
