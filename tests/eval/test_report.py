"""Reports: the published OctoThinker figures of RECIPE.md, matching a model to them, the markdown table and the
output-directory rule."""

from __future__ import annotations

import json

import pytest

from megatron_octo.eval.registry import EvalError
from megatron_octo.eval.report import (
    PUBLISHED,
    check_output_dir,
    markdown_table,
    match_published,
    model_names,
    published_comparison,
    write_results,
)
from megatron_octo.utils.io import OutputExistsError


def test_published_figures_are_recipes():
    hybrid = PUBLISHED["octothinker-3b-hybrid-base"]
    assert hybrid["scores"]["gsm8k"] == 64.4 and hybrid["scores"]["math500"] == 30.8
    assert hybrid["scores"]["tabmwp"] == 57.8 and hybrid["mean13"] == 47.6
    # each row's published mean is the mean of its 13 scores, rounded to one decimal
    for key, entry in PUBLISHED.items():
        if "mean13" in entry:
            assert abs(sum(entry["scores"].values()) / 13 - entry["mean13"]) <= 0.051, key
    assert PUBLISHED["octothinker-3b-long-zero"]["scores"] == {"math500": 65.2, "gsm8k": 85.8,
                                                               "olympiadbench": 27.3, "amc23": 40.0}
    assert PUBLISHED["llama-3.2-3b"]["scores"] == {"math500": 7.4, "gsm8k": 30.5}


def test_matching_by_name_and_setting(tmp_path):
    assert match_published(["OctoThinker-3B-Hybrid-Base"], "few-shot") == "octothinker-3b-hybrid-base"
    assert match_published(["OctoThinker-3B-Hybrid-Base"], "zero-shot") is None
    assert match_published(["OctoThinker_3B_Long_Zero"], "zero-shot") == "octothinker-3b-long-zero"
    assert match_published(["my-model"], "few-shot") is None
    assert match_published(["my-model"], "few-shot", key="Llama-3.2-3B") == "llama-3.2-3b"
    with pytest.raises(EvalError, match="no published figures named 'gpt'"):
        match_published([], "few-shot", key="gpt")
    model = tmp_path / "checkpoint-final"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"_name_or_path": "OctoThinker/OctoThinker-1B-Short-Base"}))
    assert model_names(str(model)) == ["checkpoint-final", "OctoThinker-1B-Short-Base"]


def test_comparison_and_table():
    cmp = published_comparison("octothinker-3b-hybrid-base", {"gsm8k": 60.0, "math500": 30.0, "aime24": 3.3})
    assert cmp["scores"] == {"gsm8k": 64.4, "math500": 30.8}
    assert cmp["delta"] == {"gsm8k": -4.4, "math500": -0.8}
    assert cmp["average_published"] == 47.6 and cmp["average_ours"] == 45.0  # (64.4+30.8)/2, (60+30)/2
    results = {"benchmarks": {"gsm8k": {"n": 10, "accuracy": 60.0, "no_answer": 1},
                              "math500": {"n": 10, "accuracy": 30.0, "no_answer": 0},
                              "aime24": {"n": 30, "accuracy": 3.3, "no_answer": 2}},
               "average": 31.1, "published": cmp}
    table = markdown_table(results)
    assert "| GSM8K | 10 | 60.0 | 1 | 64.4 | -4.4 |" in table
    assert "| AIME24 | 30 | 3.3 | 2 | | |" in table
    assert "| **average** | | **31.1** | | 47.6 (same 2) | |" in table
    assert published_comparison(None, {"gsm8k": 1.0}) is None


def test_output_dir_rule(tmp_path):
    out = tmp_path / "run"
    assert check_output_dir(out, overwrite=False) == out
    results = {"model": "m", "mode": "few-shot", "template": None, "backend": "transformers", "max_new_tokens": 8,
               "temperature": 0.0, "limit": None, "benchmarks": {"gsm8k": {"n": 1, "accuracy": 100.0, "no_answer": 0}},
               "average": 100.0, "published": None}
    write_results(out, results)
    assert json.loads((out / "results.json").read_text())["average"] == 100.0
    assert "| GSM8K | 1 | 100.0 | 0 |" in (out / "results.md").read_text()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output_dir(out, overwrite=False)
    assert check_output_dir(out, overwrite=True) == out
