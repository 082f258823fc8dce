"""``octo eval`` without a mode flag runs the paper's protocol: the exact few-shot prompt of each benchmark.

``--few-shot`` and ``--zero-shot`` share one argparse dest, and argparse takes the first action's default
(``store_false`` -> True): the default was zero-shot. Here the default prompt of every benchmark with a local file
is pinned to its few-shot prompt, written out from few_shot_prompts.json with the separators of each set's template
and RECIPE.md's assignment of prompt sets to benchmarks (GSM8K 8-shot CoT also for SVAMP, ASDiv, MAWPS, TabMWP;
Minerva 4-shot for MATH500, OlympiadBench, AIME24; SAT-math, MathQA, MMLU-STEM, OCW their own 4-shot; AMC23 0-shot).
"""

from __future__ import annotations

import json

import pytest

from megatron_octo.cli import build_parser, main

RECIPE_PROMPT_SETS = {
    "gsm8k": "gsm8k_cot_8shot", "svamp": "gsm8k_cot_8shot", "asdiv": "gsm8k_cot_8shot",
    "mawps": "gsm8k_cot_8shot", "tabmwp": "gsm8k_cot_8shot",
    "math500": "minerva_math_4shot", "olympiadbench": "minerva_math_4shot", "aime24": "minerva_math_4shot",
    "sat": "sat_math_4shot", "mathqa": "mathqa_4shot", "mmlu_stem": "mmlu_stem_4shot", "ocw": "ocw_courses_4shot",
    "amc23": "amc23_0shot",
}
# What each set's template puts between the exemplars and the question, and after the question (trimmed).
SEPARATORS = {
    "gsm8k_cot_8shot": ("\n\nQ: ", "\nA:"),
    "minerva_math_4shot": ("\n\nProblem:\n", "\n\nSolution:"),
    "sat_math_4shot": ("\n\nProblem:\n", "\nSolution:"),
    "mmlu_stem_4shot": ("\n\nProblem:\n", "\nSolution:"),
    "ocw_courses_4shot": ("\n\nProblem:\n", "\nSolution:"),
    "mathqa_4shot": ("\n\n\nProblem:\n", "\nSolution:"),
}


def test_the_default_mode_is_few_shot():
    parse = build_parser("eval").parse_args
    assert parse(["eval", "--model", "m"]).zero_shot is False
    assert parse(["eval", "--model", "m", "--few-shot"]).zero_shot is False
    assert parse(["eval", "--model", "m", "--zero-shot"]).zero_shot is True


def _expected(raw, key: str, question: str) -> str:
    if key == "amc23_0shot":  # no exemplars; the template's leading line breaks go, the space after "A:" stays
        return "Q: " + question + "\nA: "
    between, after = SEPARATORS[key]
    return raw[key]["few_shot_prompt"] + between + question + after


def test_default_prompt_of_each_benchmark_is_its_exact_few_shot_prompt(tiny_model, data_dir, tmp_path, capsys):
    raw = json.loads((data_dir / "prompts" / "few_shot_prompts.json").read_text(encoding="utf-8"))
    out = tmp_path / "out"
    names = [n for n in RECIPE_PROMPT_SETS if any((data_dir / "eval").glob(f"{n}_test*.jsonl"))]
    assert len(names) == 13
    assert main(["eval", "--model", str(tiny_model), "--benchmarks", ",".join(names), "--data-dir",
                 str(data_dir / "eval"), "--limit", "1", "--max-new-tokens", "1", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "few-shot" and results["template"] is None
    for name in names:
        record = json.loads((out / "predictions" / f"{name}.jsonl").read_text().splitlines()[0])
        key = RECIPE_PROMPT_SETS[name]
        assert results["benchmarks"][name]["prompt_set"] == key
        assert record["prompt"] == _expected(raw, key, record["question"]), name
    gsm8k_row = json.loads((data_dir / "eval" / "gsm8k_test.jsonl").read_text().splitlines()[0])
    gsm8k = json.loads((out / "predictions" / "gsm8k.jsonl").read_text().splitlines()[0])
    assert gsm8k["prompt"].startswith("Q: There are 15 trees in the grove.")
    assert gsm8k["prompt"].endswith("\n\nQ: " + gsm8k_row["question"].strip() + "\nA:")


def test_help_and_default_agree(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "few-shot prompts (default)" in " ".join(capsys.readouterr().out.split())
