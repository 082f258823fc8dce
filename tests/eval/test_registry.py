"""The benchmark registry: the 13 benchmarks of RECIPE.md in paper order, AIME24 beside them, name resolution."""

from __future__ import annotations

import pytest

from megatron_octo.eval.registry import (
    BENCHMARKS,
    PAPER_BENCHMARKS,
    RL_VALIDATION_BENCHMARKS,
    EvalError,
    get_benchmark,
    resolve_benchmarks,
)


def test_the_thirteen_in_paper_order():
    # RECIPE.md: GSM8K, MATH, MATH500, OlympiadBench, AMC23, SAT, MathQA, MMLU-STEM, OCW, SVAMP, ASDiv, MAWPS, TabMWP
    assert [BENCHMARKS[n].title for n in PAPER_BENCHMARKS] == [
        "GSM8K", "MATH", "MATH500", "OlympiadBench", "AMC23", "SAT-math", "MathQA", "MMLU-STEM", "OCW", "SVAMP",
        "ASDiv", "MAWPS", "TabMWP"]
    assert "aime24" in BENCHMARKS and "aime24" not in PAPER_BENCHMARKS


def test_prompt_sets_follow_recipe():
    # RECIPE.md: GSM 8-shot for GSM8K, SVAMP, ASDiv, MAWPS, TabMWP; Minerva 4-shot for MATH(500), OlympiadBench.
    for n in ("gsm8k", "svamp", "asdiv", "mawps", "tabmwp"):
        assert BENCHMARKS[n].prompt == "gsm8k_cot_8shot"
    for n in ("math", "math500", "olympiadbench"):
        assert BENCHMARKS[n].prompt == "minerva_math_4shot"
    assert BENCHMARKS["amc23"].prompt == "amc23_0shot"
    assert {BENCHMARKS[n].prompt for n in ("sat", "mathqa", "mmlu_stem", "ocw")} == {
        "sat_math_4shot", "mathqa_4shot", "mmlu_stem_4shot", "ocw_courses_4shot"}


def test_rl_validation_sets():
    assert RL_VALIDATION_BENCHMARKS == ("math500", "gsm8k", "olympiadbench", "amc23")


def test_resolution_names_groups_aliases_and_order():
    assert [b.name for b in resolve_benchmarks("MATH-500, gsm8k,math500")] == ["math500", "gsm8k"]
    assert [b.name for b in resolve_benchmarks(["rl", "aime24"])] == list(RL_VALIDATION_BENCHMARKS) + ["aime24"]
    assert len(resolve_benchmarks("paper")) == 13 and len(resolve_benchmarks("all")) == 14
    assert get_benchmark("MMLU-STEM").name == "mmlu_stem"


@pytest.mark.parametrize("spec, fragment", [("gsm9k", "unknown benchmark 'gsm9k'"), (",", "no benchmarks given")])
def test_resolution_errors_name_the_fix(spec, fragment):
    with pytest.raises(EvalError, match=fragment):
        resolve_benchmarks(spec)
