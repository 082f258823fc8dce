"""Loaders on the real files of shared/data/eval (row counts of SOURCES.md, task inputs built as the reference
harness builds them), Hub-style rows, and the one-line errors."""

from __future__ import annotations

import pytest

from megatron_octo.eval.loaders import (
    custom_items,
    items_from_rows,
    load_benchmark,
    parse_hf_spec,
)
from megatron_octo.eval.registry import BENCHMARKS, EvalError, HFSource

CHOICE = "\nWhat of the following is the right choice? Explain your answer.\n"

# SOURCES.md: rows per file
ROWS = {"gsm8k": 1319, "math500": 500, "amc23": 40, "olympiadbench": 675, "sat": 32, "ocw": 272, "mmlu_stem": 3018,
        "mathqa": 1000, "svamp": 1000, "asdiv": 2215, "mawps": 2065, "tabmwp": 1000, "aime24": 30}


@pytest.mark.parametrize("name, rows", sorted(ROWS.items()))
def test_every_local_file_loads_completely(data_dir, name, rows):
    items = load_benchmark(BENCHMARKS[name], data_dir / "eval")
    assert len(items) == rows
    assert all(it.question and it.gold for it in items)
    assert len({it.id for it in items}) == rows


def test_data_dir_may_be_the_parent_of_eval(data_dir):
    assert len(load_benchmark(BENCHMARKS["amc23"], data_dir)) == 40


def test_first_items_as_the_reference_harness_builds_them(data_dir):
    d = data_dir / "eval"
    first = {n: load_benchmark(BENCHMARKS[n], d, limit=1)[0] for n in ROWS}
    sat = first["sat"]
    assert sat.question == ("The graph of the polynomial function $f$, where $y=f(x)$, has $x$-intercepts of $(-6,0)$ "
                            "and $(6,0)$. Which of the following must be true?" + CHOICE +
                            "(A) $f(-6)=0$ (B) $f(6)=-6$ (C) $f(-6)=6$ (D) $f(0)=-6$")
    assert (sat.gold, sat.choices) == ("A", ("A", "B", "C", "D"))
    mq = first["mathqa"]
    assert mq.question == ("If log 8 x + log 8 1 / 6 = 1 / 3 , then the value of x is :" + CHOICE +
                           "(A) 12, (B) 16, (C) 18, (D) 24, (E) 26")
    assert mq.gold == "A"
    mm = first["mmlu_stem"]
    assert mm.question == ("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q." +
                           CHOICE + "(A) 0, (B) 4, (C) 2, (D) 6")
    assert mm.gold == "B"
    assert first["svamp"].question == ("There are 87 oranges and 290 bananas in Philip's collection. If the bananas "
                                       "are organized into 2 groups and oranges are organized into 93 groups. How big "
                                       "is each group of bananas?")
    assert first["svamp"].gold == "145"
    assert first["asdiv"].question == ("Seven red apples and two green apples are in the basket. How many apples are "
                                       "in the basket?")
    assert first["asdiv"].gold == "9"  # "9 (apples)" without the unit
    assert first["tabmwp"].question.startswith('Read the following table regarding "Coin collections" and answer a '
                                               'question:\nName | Number of coins\nBraden | 76\n')
    assert first["tabmwp"].question.endswith("\nSome friends discussed the sizes of their coin collections. What is "
                                             "the mean of the numbers?")
    golds = {n: first[n].gold for n in ("gsm8k", "amc23", "olympiadbench", "mawps", "ocw", "aime24")}
    assert golds == {"gsm8k": "18", "amc23": "27", "olympiadbench": "2", "mawps": "43", "ocw": "1.6",
                     "aime24": "204"}
    assert first["math500"].gold == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_tabmwp_multiple_choice_keeps_options(data_dir):
    items = load_benchmark(BENCHMARKS["tabmwp"], data_dir / "eval")
    mc = [it for it in items if it.choices]
    assert len(mc) == 249  # boolean_text 119 + extractive_text 113 + other_text 17 rows carry choices
    assert all(it.gold in it.choices for it in mc)
    assert "Please select from the following options: ['" in mc[0].question


def test_hub_style_rows():
    gsm = items_from_rows("gsm8k", [{"question": "q", "answer": "work\n#### 1,072"}])[0]
    assert gsm.gold == "1072"
    mmlu = items_from_rows("mmlu_stem", [{"question": "q", "choices": ["1", "2", "3", "4"], "answer": 2}])[0]
    assert mmlu.gold == "C" and mmlu.question.endswith("(A) 1, (B) 2, (C) 3, (D) 4")
    mq = items_from_rows("mathqa", [{"Problem": "a problem", "options": "a ) 1 , b ) 2", "correct": "b"}])[0]
    assert mq.question.startswith("A problem") and mq.gold == "B"
    math = items_from_rows("math", [{"problem": "p", "solution": "so $\\boxed{\\frac{1}{2}}$."}])[0]
    assert math.gold == "\\frac{1}{2}"


def test_custom_items_take_prompt_or_question():
    items = custom_items([{"id": "demo-0", "prompt": "What is 2 + 3?", "answer": "5"},
                          {"question": "What is 7 * 6?", "answer": 42}])
    assert [(it.id, it.question, it.gold) for it in items] == [("demo-0", "What is 2 + 3?", "5"),
                                                               ("1", "What is 7 * 6?", "42")]


def test_parse_hf_spec():
    assert parse_hf_spec("HuggingFaceH4/MATH-500") == HFSource("HuggingFaceH4/MATH-500", None, "test")
    assert parse_hf_spec("Hothan/OlympiadBench:OE_TO_maths_en_COMP@train") == HFSource(
        "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")


def test_errors_name_the_problem(tmp_path, data_dir):
    with pytest.raises(EvalError, match="does not exist"):
        load_benchmark(BENCHMARKS["gsm8k"], tmp_path / "nowhere")
    with pytest.raises(EvalError, match="no gsm8k_test.jsonl"):
        load_benchmark(BENCHMARKS["gsm8k"], tmp_path)
    (tmp_path / "gsm8k_test.jsonl").write_text('{"question": "q", "answer": "1"}\n{broken\n')
    with pytest.raises(EvalError, match="gsm8k_test.jsonl:2 is not valid JSON"):
        load_benchmark(BENCHMARKS["gsm8k"], tmp_path)
    (tmp_path / "sat_test.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(EvalError, match="row 0 cannot be read as sat"):
        load_benchmark(BENCHMARKS["sat"], tmp_path)
    with pytest.raises(EvalError, match="no registered Hugging Face dataset"):
        load_benchmark(BENCHMARKS["math"], None)
