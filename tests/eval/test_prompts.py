"""Prompts: the exact OctoThinker few-shot strings (template, separators, trimming, stop words) and zero-shot
templates. Expected strings are written out here from the templates in few_shot_prompts.json."""

from __future__ import annotations

import json

import pytest

from megatron_octo.eval.prompts import (
    RL_STOP,
    find_prompt_file,
    load_prompt_sets,
    zero_shot_prompt,
)
from megatron_octo.eval.registry import EvalError

Q = "What is $1 + 1$?"


@pytest.fixture(scope="module")
def raw(data_dir):
    return json.loads((data_dir / "prompts" / "few_shot_prompts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sets(data_dir):
    return load_prompt_sets(find_prompt_file(data_dir / "eval"))


def test_all_seven_sets_load(sets):
    assert sorted(sets) == sorted(["gsm8k_cot_8shot", "minerva_math_4shot", "sat_math_4shot", "mmlu_stem_4shot",
                                   "ocw_courses_4shot", "mathqa_4shot", "amc23_0shot"])


@pytest.mark.parametrize(
    "key, between, after, stop",
    [
        # "{few_shot_prompt}\n\nQ: {task_input}\nA: {task_output}" with an empty output, then rstrip()
        ("gsm8k_cot_8shot", "\n\nQ: ", "\nA:", ("\nQ:",)),
        # "{few_shot_prompt}\n\nProblem:\n{task_input}\n\nSolution:\n{task_output}"
        ("minerva_math_4shot", "\n\nProblem:\n", "\n\nSolution:", ("\nProblem:",)),
        ("sat_math_4shot", "\n\nProblem:\n", "\nSolution:", ("\nProblem:",)),
        ("mmlu_stem_4shot", "\n\nProblem:\n", "\nSolution:", ("\nProblem:",)),
        ("ocw_courses_4shot", "\n\nProblem:\n", "\nSolution:", ("\nProblem:",)),
        ("mathqa_4shot", "\n\n\nProblem:\n", "\nSolution:", ("\nProblem:",)),  # three line breaks in its template
    ],
)
def test_few_shot_prompts_exactly(sets, raw, key, between, after, stop):
    ps = sets[key]
    assert ps.render(Q) == raw[key]["few_shot_prompt"] + between + Q + after
    assert ps.stop == stop


def test_amc23_zero_shot_keeps_the_space_after_a(sets):
    # "{few_shot_prompt}\n\nQ: {task_input}\nA: {task_output}" with an empty exemplar text, then lstrip('\n'):
    # the leading line breaks go, the space after "A:" stays.
    assert sets["amc23_0shot"].render(Q) == "Q: " + Q + "\nA: "
    assert sets["amc23_0shot"].stop == ("\nQ:",)


def test_exemplars_end_in_the_answer_forms_the_extractors_read(raw):
    assert raw["gsm8k_cot_8shot"]["few_shot_prompt"].rstrip().endswith("The answer is 8.")
    assert raw["minerva_math_4shot"]["few_shot_prompt"].rstrip().endswith(
        "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.")
    assert raw["sat_math_4shot"]["few_shot_prompt"].rstrip().endswith("The final answer is (A). I hope it is correct.")


def test_zero_shot_templates():
    complex_ = zero_shot_prompt("complex")
    text = complex_.render("Find $\\frac{1}{2} + x$.")
    assert text.startswith("A conversation between User and Assistant.")
    assert "the \\boxed{} tag.\nFind $\\frac{1}{2} + x$.\nAssistant:" in text and text.endswith("Assistant:")
    assert complex_.stop == RL_STOP == ("User:", "Assistant:", "Question:", "Answer:")
    assert zero_shot_prompt("user_assistant").render("What is 2 + 3?") == "User: What is 2 + 3?\nAssistant:"
    assert zero_shot_prompt("raw").render("x") == "x" and zero_shot_prompt("raw").stop == ()
    custom = zero_shot_prompt("Solve: {question}\nAnswer:", stop=["\n\n"])
    assert custom.render("1+1") == "Solve: 1+1\nAnswer:" and custom.stop == ("\n\n",)


def test_errors(tmp_path, data_dir):
    with pytest.raises(EvalError, match="unknown template 'fancy'"):
        zero_shot_prompt("fancy")
    with pytest.raises(EvalError, match="few-shot prompts not found"):
        find_prompt_file(tmp_path)
    with pytest.raises(EvalError, match="does not exist"):
        find_prompt_file(None, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EvalError, match="cannot read prompt file"):
        load_prompt_sets(bad)
    assert find_prompt_file(data_dir) == data_dir / "prompts" / "few_shot_prompts.json"
