"""``octo demo --quick``: the miniature experiment runs every stage at its smallest size; summary.json carries the
comparison table and the RL validation curve; the report and figures are written; earlier outputs are protected."""

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
    assert summary["train"]["layouts"] is None  # --quick leaves the layout check out (tests/training/test_layouts.py)
    assert summary["data"]["vocab_size"] > 256
    assert summary["data"]["documents"] == {k: QUICK["corpus"][k] for k in ("web", "qa", "long_cot", "chat")}
    report = (demo_dir / "report.md").read_text()
    assert "two parallel layouts" not in report
    for plot in ("stable_then_decay.png", "comparison.png"):
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
    assert summary["eval"]["n"] == QUICK["eval_items"]
    for branch in BRANCHES:
        exported = summary["convert"][f"decay-{branch}"]
        assert exported["architecture"] == "LlamaForCausalLM" and exported["logits_finite"]
        assert (demo_dir / exported["hf_dir"] / "config.json").is_file()
        for mode in ("few_shot", "zero_shot"):
            scored = summary["eval"][f"decay-{branch}"][mode]
            assert scored["n"] == QUICK["eval_items"] and 0 <= scored["correct"] <= scored["n"]
            assert scored["accuracy"] == pytest.approx(100 * scored["correct"] / scored["n"], abs=0.01)
            assert scored["ci95"][0] <= scored["accuracy"] <= scored["ci95"][1] and scored["stderr"] >= 0
            assert 0 < scored["response_tokens"] <= QUICK["eval_tokens"]
            assert (demo_dir / scored["dir"] / "results.json").is_file()
    assert "## Convert and evaluate" in (demo_dir / "report.md").read_text()


def test_rl_validates_before_and_during(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert sorted(summary["rl"]) == [f"decay-{b}" for b in sorted(QUICK["rl_branches"])]
    for rl in summary["rl"].values():
        assert rl["steps"] == QUICK["rl_steps"] and rl["responses_per_step"] == 8 * 8  # demo.RL_GEOMETRY: 8 x 8
        # validation before the first step (at_start) and every rl_val_interval steps
        steps = list(range(0, QUICK["rl_steps"] + 1, QUICK["rl_val_interval"]))
        assert [v["step"] for v in rl["validation"]] == steps
        assert rl["val_before"]["step"] == 0 and rl["val_after"]["step"] == QUICK["rl_steps"]
        assert rl["val_before"]["n"] == QUICK["eval_items"]
        assert rl["gain"] == pytest.approx(rl["val_after"]["accuracy"] - rl["val_before"]["accuracy"])
        assert len(rl["reward"]) == len(rl["response_length"]) == QUICK["rl_steps"]
        assert all(-1.0 <= r <= 1.0 for r in rl["reward"])  # the math reward is +1 or -1 per response
        assert 1.0 <= rl["logprob_mismatch_max"] < 1.001
        assert (demo_dir / rl["run_dir"] / "hf" / "config.json").is_file()


def test_summary_carries_the_comparison_table(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    table = summary["comparison"]["table"]
    assert [r["branch"] for r in table] == list(BRANCHES)
    for row in table:
        ev = summary["eval"][f"decay-{row['branch']}"]
        assert row["few_shot"] == ev["few_shot"]["accuracy"] and row["zero_shot"] == ev["zero_shot"]["accuracy"]
        rl = summary["rl"].get(f"decay-{row['branch']}")
        if rl is None:
            assert row["rl_after"] is None and row["gain"] is None
        else:
            assert (row["rl_before"], row["rl_after"]) == (rl["val_before"]["accuracy"], rl["val_after"]["accuracy"])
            assert row["gain"] == rl["gain"] and row["response_tokens_rl_first"] == rl["response_length"][0]
    for check in summary["comparison"]["checks"]:
        assert set(check) == {"claim", "holds", "measured"}
    report = (demo_dir / "report.md").read_text()
    assert "## The comparison" in report and "](comparison.png)" in report
    assert (demo_dir / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["seconds"] > 0
