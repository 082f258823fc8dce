"""``octo demo --quick``: every stage runs, the report and summary are written, earlier outputs are protected."""

import json

import pytest

from megatron_octo.demo import BRANCHES, QUICK, run_demo
from megatron_octo.training.checkpoint import latest_checkpoint, read_meta
from megatron_octo.utils.io import OutputExistsError


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    run_demo(str(workdir), quick=True)
    return workdir


def test_demo_writes_report_and_summary(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    layouts = summary["train"]["layouts"]
    assert layouts["tokens"] == QUICK["layout_steps"] * 8 * 64  # tiny-cpu: 8 sequences of 64 tokens a step
    assert layouts["max_relative_loss_difference_between_layouts"] < 1e-5
    assert summary["data"]["vocab_size"] > 256
    report = (demo_dir / "report.md").read_text()
    for plot in ("train_loss.png", "stable_then_decay.png"):
        assert f"]({plot})" in report
        assert (demo_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_branches_descend_from_the_stable_run(demo_dir):
    stages = json.loads((demo_dir / "summary.json").read_text())["train"]["stable_then_decay"]
    stable_ckpt = latest_checkpoint(demo_dir / "train" / "stable" / "checkpoints")
    for branch in BRANCHES:
        assert stages[f"decay-{branch}"]["steps"] == QUICK["decay_steps"]
        meta = read_meta(latest_checkpoint(demo_dir / "train" / f"decay-{branch}" / "checkpoints"))
        assert meta.lineage[-1]["path"] == str(stable_ckpt.resolve())
        assert meta.lineage[-1]["step"] == QUICK["stable_steps"]
    # The decay branches end at 10% of the stable LR (cosine to min_lr = 3e-4 from 3e-3, tiny-cpu-decay-*).
    assert stages["decay-long"]["final_lr"] < stages["stable"]["final_lr"]


def test_demo_refuses_to_overwrite(demo_dir):
    before = (demo_dir / "summary.json").read_text()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_demo(str(demo_dir), quick=True)
    assert (demo_dir / "summary.json").read_text() == before


def test_decayed_branches_are_exported_to_hf_and_evaluated(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    for branch in BRANCHES:
        exported = summary["convert"][f"decay-{branch}"]
        assert exported["architecture"] == "LlamaForCausalLM" and exported["logits_finite"]
        assert (demo_dir / exported["hf_dir"] / "config.json").is_file()
        scored = summary["eval"][f"decay-{branch}"]
        assert scored["n"] == QUICK["eval_items"] and 0.0 <= scored["accuracy"] <= 100.0
    assert "## Convert and evaluate" in (demo_dir / "report.md").read_text()


def test_demo_rl_stage(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    rl = summary["rl"]
    assert rl["steps"] == QUICK["rl_steps"] and rl["responses_per_step"] == 4 * 16  # demo.RL_GEOMETRY: 4 x 16
    for key in ("reward_first", "reward_last"):
        assert -1.0 <= rl[key] <= 1.0  # the math reward is +1 or -1 per response
    assert 1.0 <= rl["logprob_mismatch_max"] < 1.001
    assert (demo_dir / "rl" / "hf" / "config.json").is_file()
    report = (demo_dir / "report.md").read_text()
    assert "## RL: GRPO" in report and f"]({rl['plot']})" in report
