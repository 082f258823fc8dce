"""Answer extraction patterns: "The answer is N", Minerva's final-answer line, the last \\boxed{}, option letters."""

from __future__ import annotations

import pytest

from megatron_octo.eval import extraction as ex


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{5} and then \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("nested \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("braces \\boxed{\\{1, 2\\}} kept", "\\{1, 2\\}"),
        ("an \\fbox{7} box", "7"),
        ("no braces: $\\boxed 5$", "5"),
        ("unclosed \\boxed{3 + 4", None),
        ("unclosed last \\boxed{2} then \\boxed{3 + ", "2"),
        ("nothing boxed here", None),
        ("", None),
    ],
)
def test_last_boxed(text, expected):
    assert ex.last_boxed(text) == expected


def test_count_boxed_counts_incomplete_boxes_too():
    assert ex.count_boxed("\\boxed{1} and \\boxed{2") == 2
    assert ex.count_boxed("none") == 0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Olivia had 23 dollars. 23 - 15 is 8. The answer is 8.", "8"),
        ("She makes $18 a day. The answer is $18.", "18"),
        ("The answer is 1,234,567.", "1234567"),
        ("The answer is -3.5 degrees.", "-3.5"),
        ("The answer is 5/2.", "5/2"),
        ("The answer is 4 and then 6 more.", "4"),
        ("21 - 15 = 6 trees were planted", "6"),  # no "answer is": the last number
        ("so the total is \\boxed{1,000}", "1000"),
        ("no numbers at all", None),
    ],
)
def test_extract_gsm(text, expected):
    assert ex.extract_gsm(text) == expected


def test_extract_gsm_prefers_answer_line_over_later_numbers():
    assert ex.extract_gsm("The answer is 12.\nQ: 7 more questions") == "12"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("... $\\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.", "24"),
        ("Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.", "-\\frac{2}{3}"),
        ("Final Answer: The final answer is $[2,5)$. I hope it is correct.", "[2,5)"),
        ("Final Answer: The final answer is $69$, $84$. I hope it is correct.", "$69$, $84$"),
        ("Final answer: The final answer is +2. I hope it is correct.", "+2"),  # OCW exemplars' lower-case "answer"
        ("Therefore the answer is $\\boxed{\\dfrac{1}{4}}$.", "\\dfrac{1}{4}"),
        ("The answer is x = 3.", "x = 3"),
        ("I do not know", None),
    ],
)
def test_extract_math(text, expected):
    assert ex.extract_math(text) == expected


@pytest.mark.parametrize(
    "text, last_mention, expected",
    [
        ("...\nFinal Answer: The final answer is (B). I hope it is correct.", False, "B"),
        ("the final answer is (d).", False, "D"),
        ("So the answer is C", False, "C"),
        ("The answer is $\\boxed{\\text{(A)}}$", False, "A"),
        ("We compare (A) and (C); (C) is right.", False, None),
        ("We compare (A) and (C); (C) is right.", True, "C"),
        ("The answer is a positive integer", False, None),  # the article "a" is no option letter
        ("The answer is (F).", False, None),  # not among the options
    ],
)
def test_extract_choice(text, last_mention, expected):
    assert ex.extract_choice(text, "ABCDE", last_mention=last_mention) == expected


def test_extract_choice_text_prefers_answer_line_and_longer_options():
    choices = ["yes", "no"]
    assert ex.extract_choice_text("No, wait. Yes it does. The answer is no.", choices) == "no"
    assert ex.extract_choice_text("It says yes here, and later no.", choices) == "no"
    opts = ["buying a used phone", "phone", "tap dance class"]
    assert ex.extract_choice_text("The answer is buying a used phone.", opts) == "buying a used phone"
    assert ex.extract_choice_text("nothing relevant", opts) is None


@pytest.mark.parametrize(
    "text, stops, expected",
    [
        ("A: 5.\nQ: next", ["\nQ:"], "A: 5."),
        ("x User: y Assistant: z", ["Assistant:", "User:"], "x "),
        ("no stop", ["\nProblem:"], "no stop"),
        ("keep all", [], "keep all"),
    ],
)
def test_truncate_at_stop(text, stops, expected):
    assert ex.truncate_at_stop(text, stops) == expected
