"""Scoring model output that can be anything: huge numbers, thousands of unclosed boxes, long runs of spaces.

The reward and the evaluation score such text (a wrong answer is -1 / incorrect), never raise, and extraction
stays linear in the text: the cases here took 67 s (20,000 unclosed boxes) or raised OverflowError before.
"""

from __future__ import annotations

import json
import time

import pytest

from megatron_octo.eval import extraction as ex
from megatron_octo.eval.registry import EvalItem
from megatron_octo.eval.runner import run_eval
from megatron_octo.eval.scoring import as_number, extract_prediction, quick_judge
from megatron_octo.rl.reward import math_rewards

BIG_FRACTION = "1" + "0" * 400 + "/3"


@pytest.mark.parametrize("pred, gold, expected", [
    (BIG_FRACTION, "5", False),  # OverflowError (float of the fraction) before
    ("5", BIG_FRACTION, False),
    (BIG_FRACTION, BIG_FRACTION, True),
    ("1" * 400, "2" * 400, False),  # both were inf as floats, so "equal"
    ("1" * 400, "1" * 400, True),
    ("1" * 400 + ".5", "1" * 400 + ".25", True),  # equal within the relative 1e-6 of every numeric comparison
    ("2" * 401, "2" * 400, False),
])
def test_huge_numbers_compare_exactly(pred, gold, expected):
    assert quick_judge("math", pred, gold) is expected
    assert quick_judge("number", pred, gold) is expected


def test_numbers_are_exact_fractions():
    assert as_number("1" * 400) == int("1" * 400)
    assert as_number("3/10") * 10 == 3 and as_number("-1,000.5") == -1000.5 and as_number("4.5e33") == 45 * 10**32
    assert as_number("1e5000") is None  # exponents beyond 1,000 go to math-verify in the time-limited pool
    assert as_number("1" * 5000) is None  # as do numbers longer than Python's int() takes


def test_reward_of_hostile_responses_is_minus_one_and_never_raises(pool):
    responses = ["\\boxed{" + BIG_FRACTION + "}", "\\boxed{" + "1" * 400 + "}", "\\boxed{" * 20_000,
                 "\\boxed{5", "The answer is" + " " * 50_000 + "!", "\\boxed{" + "1" * 400 + "}"]
    golds = ["5", "2" * 400, "5", "5", "5", "1" * 400]
    assert math_rewards(responses, golds, pool=pool) == [-1.0] * 5 + [1.0]
    assert math_rewards(["\\boxed{3}"], [BIG_FRACTION], pool=pool) == [-1.0]


HOSTILE = {
    "unclosed boxes": "\\boxed{" * 20_000,
    "bare boxes": "\\boxed " * 20_000,
    "spaces after 'answer is'": "The answer is" + " " * 100_000 + "!",
    "dollars and spaces": "answer is" + " " * 50_000 + "$" + " " * 50_000,
    "final answers without an ending": "Final Answer: The final answer is 5. " * 5_000,
    "digits": "1" * 100_000 + "x",
    "open braces then a box": "{" * 50_000 + "\\boxed{" + "}" * 10,
}
FORMATS = [("math", "5", None), ("gsm", "5", None), ("choice", "A", ("A", "B", "C")),
           ("choice_last", "A", ("A", "B")), ("ocw", "5", None), ("tabmwp", "yes", ("yes", "no"))]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_extraction_is_linear_on_hostile_text(name):
    # Linear work is well under a second here even on a loaded machine; the quadratic scans took minutes.
    text = HOSTILE[name]
    for fmt, gold, choices in FORMATS:
        for zero_shot in (False, True):
            t0 = time.monotonic()
            pred, kind = extract_prediction(fmt, text, EvalItem("1", "q", gold, choices), zero_shot)
            quick_judge(kind, pred, gold)
            assert time.monotonic() - t0 < 2.5, (name, fmt, zero_shot)


def test_boxes_still_balance_and_skip_unclosed_ones():
    assert ex.boxed_answers("\\boxed{a{b}c} x \\boxed{d \\boxed{e}") == ["a{b}c", "e"]
    assert ex.last_boxed("\\boxed{\\frac{1}{2}} and \\boxed{") == "\\frac{1}{2}"
    assert ex.last_boxed("\\boxed 5$ and \\fbox{7}") == "7"
    assert ex.boxed_answers("\\boxed{\\{1\\}}") == ["\\{1\\}"]  # escaped braces do not count


def test_an_eval_of_hostile_completions_finishes_and_writes_results(pool, tmp_path):
    class Hostile:
        name = "hostile"

        def generate(self, prompts, max_new_tokens, stop, temperature, seed, progress=None):
            texts = list(HOSTILE.values()) + ["\\boxed{" + BIG_FRACTION + "}"]
            return [texts[i % len(texts)] for i in range(len(prompts))]

    items = [{"question": f"q{i}", "answer": "5" if i % 2 else BIG_FRACTION} for i in range(8)]
    out = tmp_path / "out"
    res = run_eval("m", items=items, zero_shot=True, template="raw", generator=Hostile(), output_dir=str(out),
                   show_progress=False, log=lambda s: None, workers=2)
    assert res["benchmarks"]["custom"]["n"] == 8 and res["benchmarks"]["custom"]["correct"] == 0
    assert json.loads((out / "results.json").read_text())["benchmarks"]["custom"]["n"] == 8
