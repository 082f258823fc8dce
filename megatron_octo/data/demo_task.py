"""The demo's synthetic math task: chains of additions and subtractions, solved one operation per worked step.

``What is 7 + 2 - 5?`` is solved as ``7 + 2 = 9. 9 - 5 = 4.`` with the answer 4. Every operand lies in
``1..max_value`` and every running total in ``0..max_value``, so each step is one fact of a small table that a model
of the demo's size can learn, while a problem of ``ops`` operations needs ``ops`` of them in a row, each with the
right operand copied from the question. Difficulty is tuned by ``TaskSpec``: more operations per problem (longer
chains: more places to slip) and a larger ``max_value`` (more facts, two-digit totals).

Splits: a problem belongs to exactly one of ``train`` / ``eval`` / ``rl``, decided by a hash of its question text
(``split_of``), so the held-out evaluation problems and the RL prompts never occur in the training data, nor in each
other, however many problems each part draws (tests/data/test_demo_task.py).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

SPLITS = ("train", "eval", "rl")
SPLIT_PERCENT = {"eval": 15, "rl": 15}
"""Share of the problem space (percent, by question hash) held out for evaluation and for RL prompts; the rest is
training data."""


@dataclass(frozen=True)
class TaskSpec:
    """Difficulty of the arithmetic chains."""

    min_ops: int = 2
    """Fewest operations in a problem."""
    max_ops: int = 3
    """Most operations in a problem (each problem draws its count uniformly from ``min_ops..max_ops``)."""
    max_value: int = 9
    """Largest operand and running total (operands ``1..max_value``, totals ``0..max_value``)."""

    def __post_init__(self):
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"TaskSpec: need 1 <= min_ops <= max_ops, got {self.min_ops}..{self.max_ops}")
        if self.max_value < 2:
            raise ValueError(f"TaskSpec: max_value {self.max_value} must be >= 2")

    def space(self) -> int:
        """Distinct problems (every running total admits exactly ``max_value`` next operations)."""
        return sum((self.max_value + 1) * self.max_value**k for k in range(self.min_ops, self.max_ops + 1))


@dataclass(frozen=True)
class Problem:
    """One arithmetic chain: its question, worked steps (one per operation) and answer."""

    question: str
    steps: List[str] = field(hash=False)
    answer: int
    ops: Tuple[Tuple[str, int], ...] = ()
    start: int = 0


def make_problem(start: int, ops: Tuple[Tuple[str, int], ...]) -> Problem:
    """The problem ``start op1 b1 op2 b2 ...`` with its worked steps."""
    value, steps = start, []
    for op, b in ops:
        nxt = value + b if op == "+" else value - b
        steps.append(f"{value} {op} {b} = {nxt}.")
        value = nxt
    question = "What is " + " ".join([str(start)] + [f"{op} {b}" for op, b in ops]) + "?"
    return Problem(question, steps, value, tuple(ops), start)


def sample(rng: random.Random, spec: TaskSpec) -> Problem:
    """A random problem of ``spec``: the start, then each operation uniformly among those keeping the total in
    ``0..max_value``."""
    top = spec.max_value
    value = start = rng.randint(0, top)
    ops = []
    for _ in range(rng.randint(spec.min_ops, spec.max_ops)):
        choices = [("+", b) for b in range(1, top - value + 1)] + [("-", b) for b in range(1, value + 1)]
        op, b = rng.choice(choices)
        ops.append((op, b))
        value = value + b if op == "+" else value - b
    return make_problem(start, tuple(ops))


def split_of(question: str) -> str:
    """``train``, ``eval`` or ``rl``: a fixed function of the question text."""
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 100
    if bucket < SPLIT_PERCENT["eval"]:
        return "eval"
    if bucket < SPLIT_PERCENT["eval"] + SPLIT_PERCENT["rl"]:
        return "rl"
    return "train"


def problems(rng: random.Random, spec: Optional[TaskSpec] = None, split: Optional[str] = "train") -> Iterator[Problem]:
    """An endless stream of problems of ``split`` (None: any) drawn from ``rng``; repeats are possible."""
    spec = spec or TaskSpec()
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    while True:
        p = sample(rng, spec)
        if split is None or split_of(p.question) == split:
            yield p


def distinct(split: str, n: int, seed: str, spec: Optional[TaskSpec] = None) -> List[Problem]:
    """``n`` different problems of ``split`` (in draw order); ValueError when the split is too small for ``n``."""
    spec = spec or TaskSpec()
    expected = spec.space() * (SPLIT_PERCENT.get(split, 0) or 100 - sum(SPLIT_PERCENT.values())) // 100
    if n > expected * 0.8:
        raise ValueError(
            f"{n} distinct {split} problems asked of a split of about {expected}: raise TaskSpec.max_ops or max_value"
        )
    out: Dict[str, Problem] = {}
    stream = problems(random.Random(seed), spec, split)
    while len(out) < n:
        p = next(stream)
        out.setdefault(p.question, p)
    return list(out.values())
