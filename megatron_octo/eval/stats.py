"""Uncertainty of an accuracy measured on ``n`` problems (each right or wrong: a binomial proportion).

``standard_error`` is the usual sqrt(p (1 - p) / n); ``wilson_interval`` the Wilson score interval, which stays
inside [0, 1] and is not degenerate at 0 or n correct (where the standard error is 0). Both in percent, as the
evaluation reports accuracy.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

Z95 = 1.959963984540054
"""The two-sided 95% quantile of the standard normal distribution."""


def standard_error(correct: int, n: int) -> float:
    """Standard error (percentage points) of the accuracy ``correct / n``; 0 for ``n == 0``."""
    if n <= 0:
        return 0.0
    p = correct / n
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def wilson_interval(correct: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson score interval (percent) of the accuracy ``correct / n`` at normal quantile ``z`` (95% by default);
    (0, 100) for ``n == 0``."""
    if n <= 0:
        return 0.0, 100.0
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if correct <= 0 else max(0.0, centre - half)  # exact at the ends (no rounding residue)
    hi = 1.0 if correct >= n else min(1.0, centre + half)
    return 100.0 * lo, 100.0 * hi


def difference_standard_error(se_a: float, se_b: float) -> float:
    """Standard error of the difference of two accuracies measured independently (their errors in quadrature)."""
    return math.sqrt(se_a * se_a + se_b * se_b)


def paired_difference_standard_error(before: Sequence[bool], after: Sequence[bool]) -> float:
    """Standard error (percentage points) of ``accuracy(after) - accuracy(before)`` measured on the same problems
    (item ``i`` of each): the per-problem changes' sample standard deviation over sqrt(n). Problems right or wrong
    both times cancel out, so this is smaller than ``difference_standard_error`` when the two agree often."""
    if len(before) != len(after):
        raise ValueError(f"paired accuracies need the same problems: {len(before)} vs {len(after)} results")
    n = len(before)
    if n < 2:
        return 0.0
    d = [int(bool(a)) - int(bool(b)) for b, a in zip(before, after)]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    return 100.0 * math.sqrt(var / n)
