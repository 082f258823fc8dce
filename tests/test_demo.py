"""``octo demo``: the stages run, the report and summary are written, earlier outputs are protected."""

import json

import pytest

from megatron_octo.demo import run_demo
from megatron_octo.utils.io import OutputExistsError


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    run_demo(str(workdir), steps=3)
    return workdir


def test_demo_writes_report_and_summary(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    train = summary["train"]
    assert train["steps"] == 3
    assert train["tokens"] == 3 * 8 * 64  # tiny-cpu: 8 sequences of 64 tokens a step
    assert set(train["runs"]) == {"single", "tp2-pp2"}
    # Same initial weights on both layouts: only fp32 reduction order differs.
    assert train["max_relative_loss_difference_between_layouts"] < 1e-5
    report = (demo_dir / "report.md").read_text()
    assert "![training loss" in report and "tp2-pp2" in report
    png = (demo_dir / train["plot"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_refuses_to_overwrite(demo_dir):
    before = (demo_dir / "summary.json").read_text()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_demo(str(demo_dir), steps=3)
    assert (demo_dir / "summary.json").read_text() == before
