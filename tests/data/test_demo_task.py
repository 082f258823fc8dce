"""The demo task: answers that check out, tunable difficulty, and splits that never overlap."""

from __future__ import annotations

import random
import re

import pytest

from megatron_octo.data.demo_task import SPLITS, TaskSpec, distinct, make_problem, problems, sample, split_of


def _solve(question: str) -> int:
    """The answer recomputed from the question text (independently of the generator)."""
    m = re.fullmatch(r"What is (\d+)((?: [-+] \d+)+)\?", question)
    assert m, question
    value = int(m[1])
    for op, b in re.findall(r" ([-+]) (\d+)", m[2]):
        value = value + int(b) if op == "+" else value - int(b)
    return value


def test_answers_and_worked_steps_check_out():
    p = make_problem(7, (("+", 2), ("-", 5)))
    assert (p.question, p.steps, p.answer) == ("What is 7 + 2 - 5?", ["7 + 2 = 9.", "9 - 5 = 4."], 4)
    rng = random.Random(0)
    for _ in range(300):
        p = sample(rng, TaskSpec())
        assert p.answer == _solve(p.question)
        numbers = [int(x) for x in re.findall(r"\d+", " ".join(p.steps))]
        assert 0 <= min(numbers) and max(numbers) <= 9  # every operand and running total within max_value


def test_difficulty_is_tunable():
    rng = random.Random(1)
    hard = TaskSpec(min_ops=4, max_ops=5, max_value=19)
    drawn = [sample(rng, hard) for _ in range(200)]
    assert {len(p.steps) for p in drawn} == {4, 5}
    assert max(p.answer for p in drawn) > 9 and max(p.answer for p in drawn) <= 19
    assert TaskSpec(min_ops=2, max_ops=2, max_value=9).space() == 10 * 9 * 9  # 10 starts x 9 moves per step
    with pytest.raises(ValueError, match="min_ops"):
        TaskSpec(min_ops=3, max_ops=2)


def test_splits_do_not_overlap():
    spec = TaskSpec()
    parts = {s: {p.question for p in distinct(s, 200, f"seed-{s}", spec)} for s in ("eval", "rl")}
    stream = problems(random.Random(5), spec, "train")
    parts["train"] = {next(stream).question for _ in range(3000)}
    assert len(parts["eval"]) == len(parts["rl"]) == 200
    assert not parts["eval"] & parts["rl"] and not parts["eval"] & parts["train"] and not parts["rl"] & parts["train"]
    for split, questions in parts.items():
        assert {split_of(q) for q in questions} == {split}
    # every problem of the space falls in exactly one split, in roughly the advertised shares
    shares = dict.fromkeys(SPLITS, 0)
    for q in {sample(random.Random(i), spec).question for i in range(4000)}:
        shares[split_of(q)] += 1
    total = sum(shares.values())
    assert 0.10 < shares["eval"] / total < 0.20 and 0.10 < shares["rl"] / total < 0.20


def test_a_split_too_small_is_refused():
    with pytest.raises(ValueError, match="distinct eval problems"):
        distinct("eval", 500, "s", TaskSpec(min_ops=1, max_ops=1, max_value=9))
