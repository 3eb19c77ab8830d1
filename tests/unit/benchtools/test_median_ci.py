"""The bench's confidence interval of a sitting's median speed-up ratio (bench/sessions.py)."""

from __future__ import annotations

import statistics

from bench.sessions import median_ci


def test_the_interval_holds_the_median_and_stays_inside_the_values() -> None:
    ratios = [0.73, 1.18, 0.80, 0.91, 0.64, 0.79]  # round 12's syncflow / floor
    lo, hi = median_ci(ratios) or (None, None)
    assert lo is not None and hi is not None
    assert min(ratios) <= lo <= statistics.median(ratios) <= hi <= max(ratios)
    assert lo < hi
    assert median_ci(ratios) == (lo, hi)  # seeded: the same report twice reads the same


def test_more_rounds_of_the_same_spread_narrow_it_and_too_few_give_none() -> None:
    ratios = [0.73, 1.18, 0.80, 0.91, 0.64, 0.79]
    six = median_ci(ratios)
    thirty = median_ci(ratios * 5)
    assert six is not None and thirty is not None
    assert thirty[1] - thirty[0] < six[1] - six[0]
    assert median_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert median_ci([0.9, 1.1]) is None
