"""The RL reward for math: rule-based, from the last ``\\boxed{}`` of a response (RECIPE.md, Stage 3).

``math_reward(response, gold)`` is +1 when the last boxed answer of the response is equivalent to the gold answer
(math-verify), -1 when it is not or when the response has no complete ``\\boxed{}``; no format bonus. Each
verification has a 2-second limit that holds even if sympy hangs in C code: the work runs in a ``DeadlinePool``
worker that is killed at the deadline, and a verification that did not finish scores as wrong (-1).

Named variants (``variant=``), after the reward types of OctoThinker's released RL code (verl ``math_verifier``):

=========================  ============================================================================
``default``                +1 correct; -1 wrong or no box (the paper's reward)
``wformat`` (v2.wformat)   -1 without exactly one box or with a degenerate repetition; +1 correct; -0.5 wrong
``repeat_penalty`` (v3)    -2 for a degenerate repetition; otherwise ``default``
``repeat_boxed_penalty``   -2 for a repetition or more than one box; otherwise ``default`` (v4.repeatpenalty)
``binary``                 1 correct, 0 otherwise (accuracy, pass@k)
=========================  ============================================================================

A "degenerate repetition" is a span of at least 5 characters repeated at least 5 times in a row within one line.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from megatron_octo.eval import extraction as ex
from megatron_octo.eval.pool import DeadlinePool
from megatron_octo.eval.scoring import DEFAULT_TIMEOUT, math_equal, quick_judge, score_predictions, shared_pool

_ALIASES = {
    "octothinker": "default",
    "v2.wformat": "wformat",
    "v3.repeatpenalty": "repeat_penalty",
    "v4.repeatpenalty": "repeat_boxed_penalty",
}
VARIANTS = ("default", "wformat", "repeat_penalty", "repeat_boxed_penalty", "binary")
# What a response scores when its verification fails or runs out of time: the "wrong" value of each variant.
_WRONG = {"default": -1.0, "wformat": -0.5, "repeat_penalty": -1.0, "repeat_boxed_penalty": -1.0, "binary": 0.0}
_MIN_UNIT, _MIN_REPEATS = 5, 5


def resolve_variant(variant: str) -> str:
    """Canonical variant name (OctoThinker's names accepted); ValueError listing the choices."""
    name = _ALIASES.get(variant, variant)
    if name not in VARIANTS:
        raise ValueError(f"unknown reward variant '{variant}'; choose from {', '.join(VARIANTS)}")
    return name


def has_repetition(text: str, min_unit: int = _MIN_UNIT, min_repeats: int = _MIN_REPEATS) -> bool:
    """True when some line holds a span of >= ``min_unit`` characters repeated >= ``min_repeats`` times in a row.

    A span of period p repeats k times exactly when s[j] == s[j+p] for (k-1)*p consecutive positions j; for each
    period that is one vectorised comparison, so a line of n characters costs O(n^2 / k) array work rather than the
    cubic backtracking of the regex ``(.{5,}?)\\1{4,}``.
    """
    for line in text.split("\n"):
        n = len(line)
        if n < min_unit * min_repeats:
            continue
        arr = np.frombuffer(line.encode("utf-32-le"), dtype=np.uint32)
        for p in range(min_unit, n // min_repeats + 1):
            need = (min_repeats - 1) * p
            mask = arr[:-p] == arr[p:]
            # cheap necessary conditions first: enough matches overall, and (a run of >= need covers at least
            # need // p - 1 whole aligned blocks of p) some aligned blocks entirely matching
            if np.count_nonzero(mask) < need or not _has_aligned_blocks(mask, p, need // p - 1):
                continue
            if _longest_true_run(mask) >= need:
                return True
    return False


def _has_aligned_blocks(mask: np.ndarray, p: int, k: int) -> bool:
    """Whether ``k`` consecutive blocks ``mask[i*p:(i+1)*p]`` are all True (k <= 0: trivially)."""
    if k <= 0:
        return True
    full = np.asarray(mask[: (len(mask) // p) * p].reshape(-1, p).all(axis=1))  # [blocks]
    if len(full) < k:
        return False
    runs = np.convolve(full.astype(np.int32), np.ones(k, dtype=np.int32), mode="valid")
    return bool((runs == k).any())


def _longest_true_run(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max())


def _correct(response: str, gold: str) -> Optional[bool]:
    """Is the last box equivalent to ``gold``? None when there is no complete box."""
    pred = ex.last_boxed(response)
    if pred is None:
        return None
    quick = quick_judge("math", pred, gold)
    return quick if quick is not None else math_equal(pred, gold)


def reward_task(variant: str, response: str, gold: str) -> float:
    """The reward of one response (runs inside a pool worker: it may call sympy without a limit of its own)."""
    if variant in ("repeat_penalty", "repeat_boxed_penalty", "wformat"):
        repeated = has_repetition(response)
        n_boxed = ex.count_boxed(response)
        if variant == "wformat" and (n_boxed != 1 or repeated):
            return -1.0
        if variant == "repeat_penalty" and repeated:
            return -2.0
        if variant == "repeat_boxed_penalty" and (repeated or n_boxed >= 2):
            return -2.0
    correct = _correct(response, gold)
    if variant == "binary":
        return 1.0 if correct else 0.0
    if correct:
        return 1.0
    return -0.5 if (variant == "wformat" and correct is not None) else -1.0


def math_rewards(
    responses: Sequence[str],
    golds: Sequence[str],
    variant: str = "default",
    pool: Optional[DeadlinePool] = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> List[float]:
    """Rewards of many responses, verified in parallel by ``pool`` (default: the shared pool, one worker per core).

    Each verification has ``timeout`` seconds (``pool.timeout`` when a pool is given); one that fails or runs out of
    time scores as a wrong answer of its variant. For ``default`` and ``binary`` only the boxed answers travel to
    the workers, and each distinct (answer, gold) pair is verified once (rollouts of one prompt often agree).
    """
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses but {len(golds)} gold answers")
    name = resolve_variant(variant)
    if name in ("default", "binary"):
        triples = [("math", ex.last_boxed(r), str(g)) for r, g in zip(responses, golds)]
        verdicts = score_predictions(triples, pool=pool, timeout=timeout)
        right, wrong = (1.0, 0.0) if name == "binary" else (1.0, -1.0)
        return [right if v else wrong for v in verdicts]
    pool = pool or shared_pool(timeout=timeout)
    done = pool.map(reward_task, [(name, r, str(g)) for r, g in zip(responses, golds)], default=_WRONG[name])
    return [float(v) for v in done]


def math_reward(response: str, gold: str, variant: str = "default", timeout: float = DEFAULT_TIMEOUT) -> float:
    """The reward of one response: +1 when its last ``\\boxed{}`` is equivalent to ``gold``, -1 when it is not or
    there is none (``variant="default"``). Never blocks longer than about ``timeout`` seconds."""
    return math_rewards([response], [gold], variant=variant, timeout=timeout)[0]


class MathReward:
    """A reward function object for an RL loop: ``reward(responses, golds) -> list of floats``, owning its pool.

    ``workers`` processes verify in parallel (default: one per core); ``timeout`` is the per-verification limit.
    Close it (or use ``with``) to stop the workers.
    """

    def __init__(self, variant: str = "default", workers: Optional[int] = None, timeout: float = DEFAULT_TIMEOUT):
        self.variant = resolve_variant(variant)
        self.pool = DeadlinePool(workers=workers, timeout=timeout)

    def __call__(self, responses: Sequence[str], golds: Sequence[str]) -> List[float]:
        return math_rewards(responses, golds, self.variant, pool=self.pool)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "MathReward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
