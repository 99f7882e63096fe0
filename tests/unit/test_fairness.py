"""The fairness figures on hand-made runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boxoffice.domain.fairness import (
    Inversion,
    largest_inversion,
    position_success_correlation,
    spearman,
)

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_line_that_decided_who_bought_correlates_minus_one_at_the_cut() -> None:
    positions = list(range(1, 11))
    succeeded = [True] * 4 + [False] * 6
    rho = position_success_correlation(positions, succeeded)
    assert rho is not None
    # Binary success with a clean cut, the most negative rho that ties allow: the
    # point-biserial (2.5 - 7.5) / sqrt(99 / 12) * sqrt(0.4 * 0.6).
    assert rho == pytest.approx(-5 / (99 / 12) ** 0.5 * 0.24**0.5)
    assert rho == pytest.approx(-0.8528, abs=1e-4)


def test_a_lottery_does_not_correlate() -> None:
    positions = list(range(1, 9))
    succeeded = [True, False, False, True, True, False, False, True]
    assert position_success_correlation(positions, succeeded) == pytest.approx(0.0)


def test_a_reversed_line_correlates_positively() -> None:
    rho = position_success_correlation([1, 2, 3, 4], [False, False, True, True])
    assert rho is not None
    assert rho > 0.8


def test_no_variation_is_undefined() -> None:
    assert position_success_correlation([1, 2, 3], [True, True, True]) is None
    assert position_success_correlation([1], [True]) is None
    with pytest.raises(ValueError, match="as many"):
        spearman([1.0, 2.0], [1.0])


def test_spearman_uses_ranks_not_values() -> None:
    assert spearman([1, 2, 3, 4], [1, 4, 9, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [10, 20, 20, 30]) == pytest.approx(0.9487, abs=1e-4)


def test_a_line_admitted_in_order_has_no_inversion() -> None:
    assert largest_inversion([at(0), at(0), at(1), at(2), None, None]) == Inversion(0, 0.0)
    assert largest_inversion([]) == Inversion(0, 0.0)


def test_one_jumper_is_measured_in_places_and_seconds() -> None:
    line = [at(0), at(5), at(6), at(7), at(1), at(8)]
    # The fifth got in at 1 s, after the first (0 s) but before the second (5 s):
    # it passed three places, and the latest of them got in 6 s after it.
    assert largest_inversion(line) == Inversion(3, 6.0)


def test_passing_someone_who_never_got_in_is_an_inversion() -> None:
    line = [at(0), None, at(1), at(2)]
    assert largest_inversion(line) == Inversion(2, 0.0)


@given(st.lists(st.one_of(st.none(), st.integers(0, 50)), max_size=40))
def test_the_largest_inversion_is_the_brute_force_one(seconds: list[int | None]) -> None:
    line = [None if s is None else at(s) for s in seconds]
    big = float("inf")
    value = [big if s is None else float(s) for s in seconds]
    places, gap = 0, 0.0
    for i in range(len(value)):
        for j in range(i + 1, len(value)):
            if value[j] < value[i]:
                places = max(places, j - i)
                if value[i] != big:
                    gap = max(gap, value[i] - value[j])
    assert largest_inversion(line) == Inversion(places, gap)
