"""The RL math reward (RECIPE.md, Stage 3): +1 when the last \\boxed{} equals the gold answer, -1 when it does not
or there is none, a 2 s verification limit, OctoThinker's format-aware variants; on MATH500's real solutions."""

from __future__ import annotations

import random
import re
import time

import pytest

from megatron_octo.rl.reward import (
    VARIANTS,
    MathReward,
    has_repetition,
    math_reward,
    math_rewards,
    resolve_variant,
)
from tests.eval.helpers import derangement, read_rows, shared_data_dir


@pytest.fixture(scope="module")
def reward():
    with MathReward(workers=2) as r:
        yield r


def test_every_math500_gold_solution_gets_plus_one(reward):
    rows = read_rows("math500_test.jsonl")
    rewards = reward([r["solution"] for r in rows], [r["answer"] for r in rows])
    assert len(rewards) == 500 and rewards == [1.0] * 500


def test_shuffled_pairing_gets_minus_one(reward):
    rows = read_rows("math500_test.jsonl")[:200]  # 200 pairs keep the test short; the scorer test uses all 500
    perm = derangement(len(rows), seed=1)
    rewards = reward([rows[j]["solution"] for j in perm], [r["answer"] for r in rows])
    same = sum(rows[i]["answer"] == rows[j]["answer"] for i, j in enumerate(perm))  # true coincidences
    plus = rewards.count(1.0)
    assert set(rewards) <= {1.0, -1.0}
    assert same <= plus <= same + 4  # beyond identical answers, at most 2 % equivalent-but-differently-written
    assert plus / len(rows) < 0.05


def test_empty_gold_answers_of_math8k_give_minus_one(reward):
    rows = [__import__("json").loads(line) for line in
            (shared_data_dir() / "rl" / "math8k_train.jsonl").read_text(encoding="utf-8").splitlines()]
    empty = [i for i, r in enumerate(rows) if not str(r["answer"]).strip()]
    assert empty == [5054, 5158]  # SOURCES.md
    assert reward(["so \\boxed{}", "so \\boxed{0}"], ["", ""]) == [-1.0, -1.0]
    assert len(rows) == 8523


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("The answer is $\\boxed{\\dfrac{1}{2}}$.", "0.5", 1.0),
        ("first \\boxed{3}, finally \\boxed{4}", "4", 1.0),  # the last box counts
        ("first \\boxed{4}, finally \\boxed{3}", "4", -1.0),
        ("The answer is 4.", "4", -1.0),  # no box: -1 even when right
        ("so \\boxed{4", "4", -1.0),  # an unclosed box is no box
        ("\\fbox{12}", "12", 1.0),
        ("\\boxed{12 \\text{ cm}}", "12", 1.0),
        ("\\boxed{(1, 2)}", "(2, 1)", -1.0),
        ("", "4", -1.0),
    ],
)
def test_default_reward(reward, response, gold, expected):
    assert reward([response], [gold]) == [expected]


def test_single_call_api_and_its_limit():
    assert math_reward("so \\boxed{\\frac{3}{4}}", "0.75") == 1.0
    start = time.monotonic()
    # 9^(9^(9^(9^9))): sympy would evaluate for ever; the verification is abandoned at the 2 s limit.
    assert math_reward("\\boxed{9^{9^{9^{9^{9}}}}}", "1") == -1.0
    assert time.monotonic() - start < 2.0 + 1.0


@pytest.mark.parametrize(
    "variant, response, expected",
    [
        ("wformat", "so \\boxed{4}", 1.0),
        ("wformat", "so \\boxed{5}", -0.5),
        ("wformat", "so 4", -1.0),
        ("wformat", "\\boxed{3} or \\boxed{4}", -1.0),
        ("wformat", "blah blah blah blah blah blah \\boxed{4}", -1.0),  # "blah " five times in a row
        ("repeat_penalty", "blah blah blah blah blah blah \\boxed{4}", -2.0),
        ("repeat_penalty", "\\boxed{3} or \\boxed{4}", 1.0),
        ("repeat_boxed_penalty", "\\boxed{3} or \\boxed{4}", -2.0),
        ("repeat_boxed_penalty", "so \\boxed{4}", 1.0),
        ("binary", "so \\boxed{4}", 1.0),
        ("binary", "so \\boxed{5}", 0.0),
        ("binary", "no box", 0.0),
        ("v2.wformat", "so \\boxed{5}", -0.5),  # OctoThinker's names are accepted
        ("v4.repeatpenalty", "\\boxed{4}\\boxed{4}", -2.0),
    ],
)
def test_variants(variant, response, expected):
    assert math_rewards([response], ["4"], variant=variant) == [expected]


def test_variant_names():
    assert resolve_variant("octothinker") == "default" and "binary" in VARIANTS
    with pytest.raises(ValueError, match="unknown reward variant"):
        resolve_variant("shaped")
    with pytest.raises(ValueError, match="2 responses but 1 gold"):
        math_rewards(["a", "b"], ["1"])


def _regex_oracle(text: str) -> bool:
    """The definition in OctoThinker's verifier: a 5+ character span repeated 5+ times in a row (within a line)."""
    return bool(re.search(r"(.{5,}?)\1{4,}", text))


@pytest.mark.parametrize(
    "text",
    ["abcde" * 5, "abcde" * 4, "abcd" * 10, "abcd" * 9, "x" * 30, "x" * 24, "abcde\n" * 10,
     "The answer is 4. " * 5, "The answer is 4. " * 4, "no repetition in this sentence at all.", ""],
)
def test_repetition_matches_the_regex_definition(text):
    assert has_repetition(text) == _regex_oracle(text)


def test_repetition_random_agreement_and_speed():
    rng = random.Random(0)
    for _ in range(200):
        unit = "".join(rng.choice("ab ") for _ in range(rng.randint(1, 7)))
        text = "".join(rng.choice("ab \n") for _ in range(rng.randint(0, 20))) + unit * rng.randint(1, 7)
        assert has_repetition(text) == _regex_oracle(text), repr(text)
    line = "".join(rng.choice("abcdefghij") for _ in range(20_000))  # one long line without repeats
    start = time.monotonic()
    assert has_repetition(line) is False
    assert time.monotonic() - start < 1.5
