"""The domain rules, without a database: microseconds per test."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boxoffice.domain.commands import Book, HoldItemRequest, PlaceHold
from boxoffice.domain.errors import InsufficientSeats, InvalidRequest
from boxoffice.domain.model import (
    MAX_NAME_LENGTH,
    MAX_SECTIONS_PER_EVENT,
    EventSpec,
    Section,
    SectionSpec,
)
from boxoffice.domain.money import from_cents, to_cents


def section(capacity: int = 5, remaining: int | None = None) -> Section:
    left = capacity if remaining is None else remaining
    return Section("s", "e", "VIP", 1000, capacity, left, sold=capacity - left)


def spec(*sections: SectionSpec, name: str = "Concert") -> EventSpec:
    return EventSpec(name=name, sections=sections)


GA = SectionSpec("GA", 1000, 10)


def test_sell_takes_free_seats_all_or_none() -> None:
    s = section(capacity=5)
    s.sell(3)
    assert (s.remaining, s.held, s.sold) == (2, 0, 3)
    with pytest.raises(InsufficientSeats) as refused:
        s.sell(3)
    assert refused.value.remaining == 2
    assert refused.value.requested == 3
    assert (s.remaining, s.held, s.sold) == (2, 0, 3)


def test_selling_exactly_the_rest_sells_out() -> None:
    s = section(capacity=5, remaining=2)
    s.sell(2)
    assert (s.remaining, s.sold) == (0, 5)


@pytest.mark.parametrize("qty", [0, -1])
def test_non_positive_quantities_are_refused(qty: int) -> None:
    s = section()
    for take in (s.sell, s.hold):
        with pytest.raises(InvalidRequest):
            take(qty)
    assert s.remaining == 5


def test_held_seats_are_sold_or_freed_never_both() -> None:
    s = section(capacity=5)
    s.hold(3)
    assert (s.remaining, s.held, s.sold) == (2, 3, 0)
    s.sell_held(2)
    assert (s.remaining, s.held, s.sold) == (2, 1, 2)
    s.free_held(1)
    assert (s.remaining, s.held, s.sold) == (3, 0, 2)
    with pytest.raises(ValueError, match="only 0 are held"):
        s.free_held(1)
    s.free_sold(2)
    assert (s.remaining, s.held, s.sold) == (5, 0, 0)
    with pytest.raises(ValueError, match="only 0 are sold"):
        s.free_sold(1)


@pytest.mark.parametrize(("qty", "ok"), [(0, False), (1, True), (10, True), (11, False)])
def test_booking_quantity_limit(qty: int, ok: bool) -> None:
    request = Book("e", "s", qty)
    if ok:
        request.check_quantity(10)
    else:
        with pytest.raises(InvalidRequest, match="between 1 and 10"):
            request.check_quantity(10)


def test_a_hold_is_limited_as_a_whole_and_names_each_section_once() -> None:
    def hold(*items: tuple[str, int]) -> PlaceHold:
        return PlaceHold("e", tuple(HoldItemRequest(s, q) for s, q in items), 600)

    hold(("a", 4), ("b", 6)).check_quantity(10)
    with pytest.raises(InvalidRequest, match="items must be between 1 and 10"):
        hold(("a", 5), ("b", 6)).check_quantity(10)
    with pytest.raises(InvalidRequest, match="once"):
        hold(("a", 1), ("a", 1)).check_quantity(10)


# The inventory invariant: whatever sequence of moves, seats are neither created nor
# lost: capacity == remaining + held + sold, none negative, a refused move changes nothing.
MOVES = ["sell", "hold", "sell_held", "free_held", "free_sold"]
operations = st.lists(st.tuples(st.sampled_from(MOVES), st.integers(-2, 12)))


@given(capacity=st.integers(1, 50), ops=operations)
def test_inventory_invariant_holds_for_any_sequence(
    capacity: int, ops: list[tuple[str, int]]
) -> None:
    s = section(capacity=capacity)
    for op, qty in ops:
        before = (s.remaining, s.held, s.sold)
        try:
            getattr(s, op)(qty)
        except (InsufficientSeats, InvalidRequest, ValueError):
            assert (s.remaining, s.held, s.sold) == before, "a refused move changed seats"
        assert min(s.remaining, s.held, s.sold) >= 0
        assert s.remaining + s.held + s.sold == capacity


def test_event_spec_accepts_a_valid_event() -> None:
    event = spec(GA, SectionSpec("VIP", 0, 1))
    assert [s.name for s in event.sections] == ["GA", "VIP"]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (lambda: spec(name=""), "name"),
        (lambda: spec(GA, name="   "), "name"),
        (lambda: spec(GA, name="x" * (MAX_NAME_LENGTH + 1)), "name"),
        (lambda: spec(), "sections"),
        (
            lambda: spec(*[SectionSpec(f"s{i}", 1, 1) for i in range(MAX_SECTIONS_PER_EVENT + 1)]),
            "sections",
        ),
        (lambda: spec(GA, SectionSpec("ga", 1, 1)), "sections.1.name"),
        (lambda: spec(SectionSpec("GA", -1, 1)), "sections.0.price"),
        (lambda: spec(SectionSpec("GA", 100_000_001, 1)), "sections.0.price"),
        (lambda: spec(SectionSpec("GA", 1, 0)), "sections.0.capacity"),
        (lambda: spec(SectionSpec("GA", 1, 1_000_001)), "sections.0.capacity"),
    ],
)
def test_event_spec_refuses_broken_limits(event, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as refused:
        event()
    assert refused.value.field == field


def test_names_at_the_limit_are_fine() -> None:
    spec(SectionSpec("s" * MAX_NAME_LENGTH, 1, 1), name="x" * MAX_NAME_LENGTH)


@pytest.mark.parametrize(
    ("amount", "cents"), [("0", 0), ("0.01", 1), ("49.99", 4999), ("1000000", 100_000_000)]
)
def test_money_round_trips_exactly(amount: str, cents: int) -> None:
    assert to_cents(Decimal(amount)) == cents
    assert from_cents(cents) == Decimal(amount)


@given(st.integers(min_value=0, max_value=10**12))
def test_any_cents_become_exactly_two_decimal_places(cents: int) -> None:
    amount = from_cents(cents)
    assert amount == Decimal(cents) / 100
    assert amount.as_tuple().exponent == -2
    assert to_cents(amount) == cents


def test_money_refuses_sub_cent_amounts() -> None:
    with pytest.raises(ValueError, match="two decimal places"):
        to_cents(Decimal("0.001"))


def test_a_section_copy_is_equal_and_independent() -> None:
    original = Section("s", "e", "GA", 500, 10, 4, 2, 4, version=7, max_per_customer=3)
    working = original.copy()
    assert working == original
    working.sell(3)
    assert (original.remaining, working.remaining) == (4, 1)
