"""Accuracy uncertainty: binomial standard error, Wilson interval, paired difference (hand-computed values)."""

import math

import pytest

from megatron_octo.eval.stats import (
    difference_standard_error,
    paired_difference_standard_error,
    standard_error,
    wilson_interval,
)


def test_standard_error_and_wilson_interval():
    assert standard_error(30, 100) == pytest.approx(100 * math.sqrt(0.3 * 0.7 / 100))  # 4.58
    assert standard_error(0, 0) == 0.0 and standard_error(0, 50) == 0.0
    lo, hi = wilson_interval(0, 50)  # not degenerate where the standard error is 0: (0, z^2 / (n + z^2))
    assert lo == 0.0 and hi == pytest.approx(100 * 3.8415 / (50 + 3.8415), abs=0.01)  # 7.13
    # 30/100 by hand: centre (0.3 + 0.019207) / 1.038415 = 0.307399, half 1.96 * sqrt(0.0021 + 0.000096) / 1.038415
    # = 0.088450 -> 0.21895 .. 0.39585
    lo, hi = wilson_interval(30, 100)
    assert (lo, hi) == (pytest.approx(21.895, abs=0.01), pytest.approx(39.585, abs=0.01))
    assert difference_standard_error(3.0, 4.0) == 5.0


def test_paired_difference_standard_error():
    # 10 problems: 3 fixed (wrong -> right), 1 broken, 6 unchanged: d = [1,1,1,-1,0,0,0,0,0,0], mean 0.2,
    # sample variance (3 * 0.64 + 1.44 + 6 * 0.04) / 9 = 0.4, SE sqrt(0.4 / 10) = 0.2
    before = [False, False, False, True, True, True, False, False, False, False]
    after = [True, True, True, False, True, True, False, False, False, False]
    assert paired_difference_standard_error(before, after) == pytest.approx(20.0)
    assert paired_difference_standard_error(before, before) == 0.0
    with pytest.raises(ValueError, match="same problems"):
        paired_difference_standard_error([True], [True, False])
