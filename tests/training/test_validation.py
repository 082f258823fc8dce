"""Held-out validation loss during training (Megatron-LM's eval_interval / eval_iters): which steps evaluate and
which samples they read (by hand), and the logged value against transformers on the converted checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from megatron_octo.config import load_recipe
from megatron_octo.training.validation import eval_index, num_evaluations, validation_samples


def test_evaluation_steps_and_sample_count_by_hand():
    recipe = load_recipe("tiny-cpu", ["train.eval_interval=10", "train.eval_iters=3"])  # global batch 8
    # a 25-step stage evaluates after steps 10, 20 and (the end) 25: evaluations 0, 1, 2
    assert [eval_index(recipe, s, 25) for s in (9, 10, 15, 20, 24, 25)] == [None, 0, None, 1, None, 2]
    assert num_evaluations(recipe, 25) == 25 // 10 + 1 == 3
    assert validation_samples(recipe, 25) == 3 * 3 * 8
    # a stage ending on a multiple needs no extra evaluation: 20 // 10 + 1 = 3 sized, 2 used (Megatron's count)
    assert [eval_index(recipe, s, 20) for s in (10, 20)] == [0, 1]
    off = load_recipe("tiny-cpu", ["train.eval_interval=null"])
    assert eval_index(off, 30, 30) is None and num_evaluations(off, 30) == 0
    assert eval_index(load_recipe("tiny-cpu", ["train.eval_iters=0"]), 10, 30) is None


def octo_train(run_dir, overrides):
    cmd = [sys.executable, "-m", "megatron_octo", "train", "--recipe", "tiny-cpu", "--run-dir", str(run_dir),
           "train.iters=4", "train.eval_interval=2", "train.eval_iters=2", "schedule.warmup_iters=0",
           "checkpoint.save_interval=2", "checkpoint.keep_last=3", "logging.tensorboard=false", *overrides]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def hf_loss(run_dir, step: int, samples: torch.Tensor, tmp_path) -> float:
    """Mean next-token loss of the run's step-``step`` checkpoint, converted to HF, run by transformers."""
    from transformers import AutoModelForCausalLM

    from megatron_octo.convert import mcore_to_hf

    out = tmp_path / f"hf{step}"
    mcore_to_hf(f"{run_dir}:{step}", str(out), quiet=True)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=samples[:, :-1]).logits.float()  # [b, s, V]
    return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), samples[:, 1:].flatten()))


def test_validation_loss_is_the_held_out_loss_of_the_weights_and_survives_a_resume(tmp_path):
    from megatron_octo.data.synthetic import SyntheticTokens

    run = tmp_path / "run"
    first = octo_train(run, ["train.exit_interval=3"])
    assert [("val_loss" in r) for r in first] == [False, True, False]
    records = octo_train(run, [])  # resumes after step 3
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [("val_loss" in r) for r in records] == [False, True, False, True]
    held_out = SyntheticTokens(vocab_size=256, seq_len=64, seed=1234, held_out=True)
    train = SyntheticTokens(vocab_size=256, seq_len=64, seed=1234)
    assert not any(torch.equal(held_out[i], train[i]) for i in range(8))  # another stream than training's
    # evaluation 0 (after step 2) reads held-out samples 0..15 (2 global batches of 8), evaluation 1 the next 16
    for step, first_sample in ((2, 0), (4, 16)):
        samples = torch.stack([held_out[i] for i in range(first_sample, first_sample + 16)])
        expected = hf_loss(run, step, samples, tmp_path)
        assert records[step - 1]["val_loss"] == pytest.approx(expected, rel=1e-5), step
        assert records[step - 1]["val_ppl"] == pytest.approx(torch.tensor(expected).exp().item(), rel=1e-5)
