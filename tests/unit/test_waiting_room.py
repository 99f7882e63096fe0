"""The waiting room's settings limits, and how many it lets in under each constraint."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boxoffice.domain.errors import InvalidRequest
from boxoffice.domain.waiting_room import (
    DEFAULT_PRIOR_QUANTITY,
    MAX_NEW_USERS_PER_MINUTE,
    MAX_SESSION_DURATION_SECONDS,
    MAX_TOTAL_ACTIVE_USERS,
    MIN_SESSION_DURATION_SECONDS,
    PACE_BURST,
    PurchaseStats,
    RoomFigures,
    RoomSettings,
    admissions,
    paced_after,
    resumed_bucket,
)

OPENS = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
NOW = OPENS + timedelta(minutes=5)


def settings(**changes: Any) -> RoomSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "opens_at": OPENS,
        "prequeue_opens_at": OPENS - timedelta(hours=1),
        "new_users_per_minute": 100,
        "total_active_users": 500,
        "session_duration_seconds": 600,
        "queueing_method": "fifo",
    }
    values.update(changes)
    return RoomSettings(**values)


def fast(**changes: Any) -> RoomSettings:
    """A room whose pace lets 1,000 in at once: another limit is the one under test."""
    return settings(new_users_per_minute=60_000, total_active_users=60_000, **changes)


def figures(**changes: Any) -> RoomFigures:
    values: dict[str, Any] = {
        "shopping": 0,
        "admitted_last_minute": 0,
        "seats_left": 10_000,
        "waiting": 1_000,
    }
    values.update(changes)
    return RoomFigures(**values)


# Settings ---------------------------------------------------------------------------


def test_good_settings_are_kept_as_given() -> None:
    room = settings(queueing_method="random", suspended=True)
    assert room.new_users_per_minute == 100
    assert room.session_duration == timedelta(minutes=10)
    assert room.suspended


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("newUsersPerMinute", {"new_users_per_minute": 0}),
        ("newUsersPerMinute", {"new_users_per_minute": -5}),
        ("newUsersPerMinute", {"new_users_per_minute": MAX_NEW_USERS_PER_MINUTE + 1}),
        ("newUsersPerMinute", {"new_users_per_minute": True}),
        ("newUsersPerMinute", {"new_users_per_minute": 10.5}),
        ("totalActiveUsers", {"total_active_users": 0}),
        ("totalActiveUsers", {"total_active_users": MAX_TOTAL_ACTIVE_USERS + 1}),
        ("totalActiveUsers", {"new_users_per_minute": 600, "total_active_users": 599}),
        ("sessionDurationSeconds", {"session_duration_seconds": MIN_SESSION_DURATION_SECONDS - 1}),
        ("sessionDurationSeconds", {"session_duration_seconds": MAX_SESSION_DURATION_SECONDS + 1}),
        ("queueingMethod", {"queueing_method": "lifo"}),
        ("opensAt", {"opens_at": datetime(2026, 12, 1, 10, 0)}),
        ("prequeueOpensAt", {"prequeue_opens_at": datetime(2026, 12, 1, 9, 0)}),
        ("prequeueOpensAt", {"prequeue_opens_at": OPENS}),
        ("prequeueOpensAt", {"prequeue_opens_at": OPENS + timedelta(seconds=1)}),
        ("prequeueOpensAt", {"prequeue_opens_at": OPENS - timedelta(days=7, seconds=1)}),
        ("prequeueOpensAt", {"opens_at": None}),
    ],
)
def test_each_limit_is_refused_with_its_field(field: str, changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        settings(**changes)
    assert refused.value.field == field


def test_the_limits_themselves_are_accepted() -> None:
    settings(new_users_per_minute=1, total_active_users=1)
    settings(
        new_users_per_minute=MAX_NEW_USERS_PER_MINUTE, total_active_users=MAX_TOTAL_ACTIVE_USERS
    )
    settings(session_duration_seconds=MIN_SESSION_DURATION_SECONDS)
    settings(session_duration_seconds=MAX_SESSION_DURATION_SECONDS)
    settings(prequeue_opens_at=OPENS - timedelta(days=7))
    settings(prequeue_opens_at=None, opens_at=None)


def test_phase_follows_the_clock() -> None:
    room = settings()
    assert room.phase(OPENS - timedelta(hours=2)) == "closed"
    assert room.phase(OPENS - timedelta(hours=1)) == "prequeue"
    assert room.phase(OPENS - timedelta(microseconds=1)) == "prequeue"
    assert room.phase(OPENS) == "open"
    assert settings(prequeue_opens_at=None).phase(OPENS - timedelta(minutes=1)) == "closed"
    assert settings(prequeue_opens_at=None, opens_at=None).phase(OPENS) == "open"


# The average quantity -------------------------------------------------------------------


def test_the_prior_stands_before_any_purchase_and_gives_way_to_measurement() -> None:
    assert PurchaseStats().average_quantity() == DEFAULT_PRIOR_QUANTITY
    assert PurchaseStats(prior=6).average_quantity() == 6
    few = PurchaseStats(purchases=1, tickets=1).average_quantity()
    assert Fraction(7, 2) < few < DEFAULT_PRIOR_QUANTITY  # one purchase of 1 barely moves it
    many = PurchaseStats(purchases=10_000, tickets=25_000).average_quantity()
    assert abs(many - Fraction(5, 2)) < Fraction(1, 100)


def test_the_average_is_never_below_one_seat() -> None:
    assert PurchaseStats(purchases=1_000, tickets=0).average_quantity() == 1


# Pacing ---------------------------------------------------------------------------------


def _ticks(
    room: RoomSettings, seconds: float, tick: float = 0.5, waiting: int = 1_000_000
) -> list[int]:
    """Those let in at each tick of a loop that turns every `tick` seconds, the stock,
    the line and the active cap never the limit (the per-minute window is counted)."""
    paced_until, let_in = None, []
    for n in range(int(seconds / tick)):
        now = NOW + timedelta(seconds=n * tick)
        last_minute = sum(let_in[-int(60 / tick) + 1 :]) if n else 0
        live = figures(
            waiting=waiting,
            seats_left=100_000_000,
            admitted_last_minute=last_minute,
            paced_until=paced_until,
        )
        decided = admissions(room, live, now)
        assert decided.paced
        paced_until = paced_after(room, decided, paced_until, now, decided.count)
        let_in.append(decided.count)
    return let_in


@pytest.mark.parametrize("per_minute", [1, 2, 7, 100, 1_000, 12_000, 1_000_000])
def test_the_pace_spreads_a_minutes_admissions_over_the_minute(per_minute: int) -> None:
    room = settings(new_users_per_minute=per_minute, total_active_users=MAX_TOTAL_ACTIVE_USERS)
    let_in = _ticks(room, 300)
    burst = 1 + per_minute * 5 // 60
    assert let_in[0] == burst  # five seconds' worth and one at once: never the minute
    assert max(let_in) <= burst
    for start in range(0, len(let_in) - 120, 7):  # any minute: the pace, not more
        minute = sum(let_in[start : start + 120])
        assert minute <= per_minute
        assert minute >= per_minute * 0.99 - 1  # and not (much) less: ticks lose little


@pytest.mark.parametrize("per_minute", [7, 11, 13, 100, 12_000])
def test_ticks_that_come_late_keep_the_pace(per_minute: int) -> None:
    """A loaded machine's loop ticks late and unevenly (0.3 to 3 s apart): the bucket keeps
    the pace all the same, and never more than it in any minute."""
    room = settings(new_users_per_minute=per_minute, total_active_users=MAX_TOTAL_ACTIVE_USERS)
    draw = random.Random(per_minute)
    now, paced_until, let_in = NOW, None, []
    while now < NOW + timedelta(minutes=10):
        last_minute = sum(count for at, count in let_in if now - at < timedelta(minutes=1))
        live = figures(seats_left=10**8, admitted_last_minute=last_minute, paced_until=paced_until)
        decided = admissions(room, live, now)
        paced_until = paced_after(room, decided, paced_until, now, decided.count)
        let_in.append((now, decided.count))
        now += timedelta(seconds=draw.uniform(0.3, 3))
    total = sum(count for _, count in let_in)
    assert per_minute * 10 * 0.97 - 2 <= total <= per_minute * 10 + 1


def test_a_small_room_lets_one_in_and_the_next_when_its_turn_comes() -> None:
    let_in = _ticks(settings(new_users_per_minute=2, total_active_users=2), 61)
    # 0 s; 25 s (the bucket's tolerance of one customer); 60 s (never 3 in any 60 s).
    assert [n for n, count in enumerate(let_in) if count] == [0, 50, 120]


def test_the_per_minute_window_caps_admissions_whatever_the_bucket() -> None:
    decided = admissions(settings(), figures(admitted_last_minute=100), NOW)
    assert (decided.count, decided.limited_by) == (0, "rate")
    room = settings(new_users_per_minute=6_000, total_active_users=6_000)
    decided = admissions(room, figures(admitted_last_minute=5_950), NOW)
    assert (decided.count, decided.limited_by) == (50, "rate")  # the pace would give 100


def test_a_pace_raised_mid_sale_takes_effect_at_once() -> None:
    slow = settings(new_users_per_minute=1)
    first = admissions(slow, figures(), NOW)
    paced_until = paced_after(slow, first, None, NOW, first.count)  # the next in a minute
    assert admissions(slow, figures(paced_until=paced_until), NOW).count == 0
    fast = settings(new_users_per_minute=6_000, total_active_users=6_000)
    decided = admissions(fast, figures(paced_until=paced_until), NOW)
    assert decided.count == 0  # the bucket is full, at the new pace: its burst
    paced_until = paced_after(fast, decided, paced_until, NOW, decided.count)
    assert paced_until == NOW + PACE_BURST + timedelta(milliseconds=10)  # 501 at 100 a second
    soon = admissions(fast, figures(paced_until=paced_until), NOW + timedelta(milliseconds=500))
    assert soon.count == 50  # half a second later, half a second's worth


def test_the_line_opens_and_resumes_at_its_pace_not_with_a_burst() -> None:
    room = settings(new_users_per_minute=12_000, total_active_users=12_000)
    paced_until = None
    # The pre-queue's ticks keep the bucket empty; so does a suspension.
    before = OPENS - timedelta(milliseconds=500)
    for phase_room, at in ((room, before), (fast(suspended=True), NOW)):
        waiting = admissions(phase_room, figures(), at)
        assert waiting.count == 0
        paced_until = paced_after(phase_room, waiting, paced_until, at, 0)
        tick = at + timedelta(milliseconds=500)
        resumed = admissions(room, figures(paced_until=paced_until, seats_left=10**6), tick)
        assert resumed.count == 101  # one, and half a second of 200 a second: not five
    # A line held by the stock keeps filling its bucket: seats back, a burst at most.
    held = admissions(room, figures(seats_left=0, seats_held=10), NOW)
    assert held.limited_by == "stock"
    paced_until = paced_after(room, held, paced_until, NOW, 0)
    later = NOW + timedelta(minutes=1)
    back = figures(paced_until=paced_until, seats_left=10**6, waiting=5_000)
    assert admissions(room, back, later).count == 1_001


def test_those_let_in_unpaced_do_not_hold_the_pace_back() -> None:
    for room in (settings(queueing_method="passthrough"), settings(enabled=False)):
        assert not admissions(room, figures(), NOW).paced
    assert not admissions(settings(suspended=True), figures(), NOW).paced


def test_total_active_users_limits_admissions() -> None:
    decided = admissions(fast(), figures(shopping=59_980, likely_buyers=0), NOW)
    assert (decided.count, decided.limited_by) == (20, "active")
    assert admissions(fast(), figures(shopping=60_000, likely_buyers=0), NOW).count == 0


def test_never_more_than_are_waiting() -> None:
    decided = admissions(fast(), figures(waiting=7), NOW)
    assert (decided.count, decided.limited_by) == (7, "waiting")


def test_admission_stops_when_the_seats_left_cannot_serve_those_inside() -> None:
    stats = PurchaseStats(purchases=1_000, tickets=2_000, prior=2)  # an average of 2
    inside = figures(shopping=50, seats_left=100, stats=stats)
    decided = admissions(fast(), inside, NOW)
    assert (decided.count, decided.state, decided.limited_by) == (0, "open", "stock")


def test_admission_resumes_when_seats_return() -> None:
    stats = PurchaseStats(purchases=1_000, tickets=2_000, prior=2)
    decided = admissions(fast(), figures(shopping=50, seats_left=106, stats=stats), NOW)
    assert (decided.count, decided.limited_by) == (3, "stock")


def test_the_last_shopper_let_in_may_find_fewer_than_the_average() -> None:
    stats = PurchaseStats(purchases=1_000, tickets=2_000, prior=2)
    # 101 seats, 50 inside at 2 each: one seat left, enough for one more shopper.
    decided = admissions(fast(), figures(shopping=50, seats_left=101, stats=stats), NOW)
    assert decided.count == 1


def test_only_shoppers_still_likely_to_buy_hold_the_stock_back() -> None:
    """Those let in longer ago than the shopper grace without trying count against the
    active users, not against the stock."""
    stats = PurchaseStats(purchases=1_000, tickets=2_000, prior=2)
    idle = figures(shopping=50, likely_buyers=0, seats_left=100, stats=stats)
    assert admissions(fast(), idle, NOW).count == 50
    crowded = figures(shopping=59_990, likely_buyers=0, seats_left=100, stats=stats)
    assert admissions(fast(), crowded, NOW).count == 10  # still inside, as active users
    some = figures(shopping=50, likely_buyers=45, seats_left=100, stats=stats)
    assert admissions(fast(), some, NOW).count == 5


def test_the_prior_paces_the_stock_before_any_purchase() -> None:
    decided = admissions(fast(), figures(seats_left=20, waiting=1_000), NOW)
    assert (decided.count, decided.limited_by) == (5, "stock")  # 20 seats / 4 each
    pairs = figures(seats_left=20, stats=PurchaseStats(prior=2))  # at most 2 per customer
    assert admissions(fast(), pairs, NOW).count == 10


def test_sold_out_is_its_own_state_whatever_the_settings() -> None:
    for room in (settings(), settings(suspended=True), settings(queueing_method="passthrough")):
        decided = admissions(room, figures(seats_left=0), NOW)
        assert (decided.count, decided.state) == (0, "sold_out")


def test_seats_all_held_pause_the_line_without_selling_it_out() -> None:
    decided = admissions(settings(), figures(seats_left=0, seats_held=12), NOW)
    assert (decided.count, decided.state, decided.limited_by) == (0, "open", "stock")
    returned = admissions(settings(), figures(seats_left=4, seats_held=8), NOW)
    assert (returned.count, returned.state) == (1, "open")


def test_a_cancellation_after_the_sell_out_reopens_the_line() -> None:
    assert admissions(settings(), figures(seats_left=0), NOW).state == "sold_out"
    assert admissions(settings(), figures(seats_left=3), NOW).state == "open"


def test_suspended_admits_nobody() -> None:
    decided = admissions(settings(suspended=True), figures(), NOW)
    assert (decided.count, decided.state) == (0, "suspended")


def test_nobody_is_admitted_before_opening() -> None:
    assert admissions(settings(), figures(), OPENS - timedelta(minutes=1)).state == "prequeue"
    assert admissions(settings(), figures(), OPENS - timedelta(hours=2)).state == "closed"
    assert admissions(settings(), figures(), OPENS - timedelta(minutes=1)).count == 0


def test_passthrough_lets_everyone_waiting_in() -> None:
    room = settings(queueing_method="passthrough")
    decided = admissions(room, figures(admitted_last_minute=100, shopping=500), NOW)
    assert (decided.count, decided.state) == (1_000, "open")


def test_reject_admits_nobody() -> None:
    decided = admissions(settings(queueing_method="reject"), figures(), NOW)
    assert (decided.count, decided.state) == (0, "rejecting")


def test_a_room_turned_off_lets_everyone_through() -> None:
    decided = admissions(settings(enabled=False), figures(), NOW)
    assert (decided.count, decided.state) == (1_000, "off")


@given(
    shopping=st.integers(0, 2_000),
    last_minute=st.integers(0, 2_000),
    seats=st.integers(-5, 5_000),
    waiting=st.integers(0, 5_000),
    purchases=st.integers(0, 500),
    per_purchase=st.integers(1, 6),
)
def test_admissions_never_break_a_limit(
    shopping: int, last_minute: int, seats: int, waiting: int, purchases: int, per_purchase: int
) -> None:
    stats = PurchaseStats(purchases=purchases, tickets=purchases * per_purchase)
    live = RoomFigures(shopping, last_minute, seats, waiting, stats=stats)
    decided = admissions(settings(), live, NOW)
    assert 0 <= decided.count <= waiting
    assert shopping + decided.count <= max(500, shopping)
    assert last_minute + decided.count <= max(100, last_minute)
    average = stats.average_quantity()
    if decided.count:
        # The last one let in still has at least one seat of its expected share.
        assert seats - (shopping + decided.count - 1) * average > 0
    if seats <= 0:
        assert decided.state == "sold_out"
        assert decided.count == 0


def test_changing_a_setting_is_a_new_valid_value() -> None:
    room = settings()
    with pytest.raises(InvalidRequest):
        replace(room, new_users_per_minute=0)


def test_a_loop_that_did_not_tick_for_a_while_restarts_at_its_pace() -> None:
    room = settings(new_users_per_minute=12_000, total_active_users=12_000)
    behind = NOW - timedelta(minutes=10)  # a bucket the room left long ago, caught up
    assert resumed_bucket(room, behind, timedelta(milliseconds=500), NOW) == behind
    assert resumed_bucket(room, None, timedelta(minutes=10), NOW) is None
    restarted = resumed_bucket(room, behind, timedelta(minutes=10), NOW)
    assert admissions(room, figures(paced_until=restarted, seats_left=10**6), NOW).count == 1
    assert not settings(queueing_method="reject").moving_per_second
    assert not settings(suspended=True).moving_per_second
    assert settings().moving_per_second == 100 / 60


def test_figures_written_by_another_version_are_read() -> None:
    """A rolling deploy or a rollback: one version reads the figures another wrote."""
    import json

    from boxoffice.services.waiting_room import Published

    published = Published("open", "rate", 5, 2, 10, 10, 0.5, 100, 3, 2.5, (), 1, None)
    newer = json.loads(published.to_json()) | {"from_a_later_version": [1, 2]}
    assert Published.from_json(json.dumps(newer)) == published
    older = json.loads(published.to_json())
    del older["paced_until"]
    assert Published.from_json(json.dumps(older)).paced_until is None
    # 100 seats left and 3 held, 2.5 a purchase: 42 more shoppers could be served at most.
    assert published.servable_places == 42
