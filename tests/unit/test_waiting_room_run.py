"""A whole sale through the room's core, on a simulated clock: the pieces agree.

2,000 customers (a quarter in the pre-queue) race for 500 seats. Every half
second the loop asks `admissions()` how many to let in and moves the
watermark over that many waiting keys; each admitted customer buys 1 to 4
seats some seconds later, or finds none. No database and no HTTP: this checks
that pacing, keys, watermark, polls and the fairness figures fit together.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from boxoffice.domain.fairness import largest_inversion, position_success_correlation
from boxoffice.domain.queue_order import (
    FIFO_BASE,
    PREQUEUE_TOP,
    RANDOM_BASE,
    RANDOM_TOP,
    Band,
    LineSnapshot,
    Watermark,
    answer_poll,
    order_key,
)
from boxoffice.domain.waiting_room import (
    DEFAULT_PRIOR_QUANTITY,
    PurchaseStats,
    RoomFigures,
    RoomSettings,
    admissions,
    paced_after,
)

OPENS = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
TICK = timedelta(milliseconds=500)
SEATS = 500


@dataclass
class Customer:
    key: int
    joins: datetime
    wants: int
    shops_for: timedelta
    admitted_at: datetime | None = None
    bought: int = 0
    done: bool = False


@dataclass
class Run:
    customers: list[Customer]
    seats_left: int = SEATS
    mark: Watermark = field(default_factory=Watermark)
    stats: PurchaseStats = field(default_factory=PurchaseStats)
    futile: int = 0  # admitted, found no seat
    sold_out_at: datetime | None = None
    paced_until: datetime | None = None


@functools.cache
def sale(
    *,
    inventory_aware: bool,
    prior: int = DEFAULT_PRIOR_QUANTITY,
    seed: int = 12,
    per_minute: int = 300,
) -> Run:
    draw = random.Random(seed)
    room = RoomSettings(
        enabled=True,
        prequeue_opens_at=OPENS - timedelta(hours=1),
        opens_at=OPENS,
        new_users_per_minute=per_minute,
        total_active_users=per_minute,
        session_duration_seconds=120,
    )
    customers = []
    for n in range(2_000):
        early = n < 500
        joins = OPENS - timedelta(minutes=30) if early else OPENS + timedelta(seconds=n / 25)
        key = order_key("prequeue" if early else "fifo", sequence=n - 500, watermark=-1, rng=draw)
        customers.append(
            Customer(key, joins, draw.randint(1, 4), timedelta(seconds=draw.uniform(5, 40)))
        )
    run = Run(customers, stats=PurchaseStats(prior=prior))
    now = OPENS
    while now < OPENS + timedelta(minutes=5):
        for c in customers:  # purchases due now
            if c.admitted_at and not c.done and now >= c.admitted_at + c.shops_for:
                c.done = True
                c.bought = min(c.wants, run.seats_left)
                run.seats_left -= c.bought
                if c.bought:
                    run.stats = PurchaseStats(
                        run.stats.purchases + 1, run.stats.tickets + c.bought, prior
                    )
                else:
                    run.futile += 1
        if run.seats_left == 0 and run.sold_out_at is None:
            run.sold_out_at = now
        if run.seats_left == 0 and all(c.done for c in customers if c.admitted_at):
            break
        waiting = sorted(
            (c for c in customers if c.admitted_at is None and c.joins <= now), key=lambda c: c.key
        )
        live = RoomFigures(
            shopping=sum(1 for c in customers if c.admitted_at and not c.done),
            admitted_last_minute=sum(
                1 for c in customers if c.admitted_at and now - c.admitted_at < timedelta(minutes=1)
            ),
            seats_left=run.seats_left if inventory_aware else (SEATS if run.seats_left else 0),
            waiting=len(waiting),
            stats=run.stats,
            paced_until=run.paced_until,
        )
        decided = admissions(room, live, now)
        run.paced_until = paced_after(room, decided, run.paced_until, now, decided.count)
        if decided.count:
            for c in waiting[: decided.count]:
                c.admitted_at = now
            run.mark = run.mark.advanced(now, waiting[decided.count - 1].key)
        now += TICK
    return run


def test_a_sale_through_the_room_sells_every_seat_once_in_line_order() -> None:
    run = sale(inventory_aware=True)
    assert run.seats_left == 0
    assert sum(c.bought for c in run.customers) == SEATS
    in_line = sorted(run.customers, key=lambda c: c.key)
    # Admitted in key order, step by step: no one passed anyone.
    assert largest_inversion([c.admitted_at for c in in_line]).places == 0
    rho = position_success_correlation(
        list(range(1, len(in_line) + 1)), [c.bought > 0 for c in in_line]
    )
    assert rho is not None
    assert rho < -0.5


def test_following_the_inventory_lets_in_few_who_find_nothing() -> None:
    aware = sale(inventory_aware=True)
    blind = sale(inventory_aware=False)  # a room in front of the shop, blind to its stock
    admitted = sum(1 for c in aware.customers if c.admitted_at)
    assert aware.futile < 0.05 * admitted
    assert blind.futile > 5 * max(1, aware.futile)


def test_a_prior_below_the_true_average_lets_a_fast_pace_in_for_nothing() -> None:
    # The customers take 2.5 seats on average; a prior of a pair is what the stock limit
    # goes by until purchases are measured. At 6,000 a minute the seats' worth of shoppers
    # are let in before the first purchase (5 s in): too many find nothing.
    fast = 6_000
    assert sale(inventory_aware=True, prior=2, per_minute=fast).futile > 5 * max(
        1, sale(inventory_aware=True, per_minute=fast).futile
    )
    # At 300 a minute the pace, spread over the minute, lets purchases be measured first.
    assert sale(inventory_aware=True, prior=2).futile <= 2 * max(
        1, sale(inventory_aware=True).futile
    )


def test_polls_tell_the_waiting_sold_out_and_the_admitted_their_session() -> None:
    run = sale(inventory_aware=True)
    assert run.sold_out_at is not None
    line = LineSnapshot(
        run.mark,
        (
            Band(0, PREQUEUE_TOP, 0),
            Band(FIFO_BASE, FIFO_BASE + 1_500, 0),
            Band(RANDOM_BASE, RANDOM_TOP, 0),
        ),
        0.0,
        timedelta(seconds=120),
        sold_out=True,
    )
    at = run.sold_out_at + timedelta(seconds=1)
    for c in run.customers:
        answer = answer_poll(c.key, line, at)
        if c.admitted_at is None:
            assert answer.status == "sold_out"
        elif at < c.admitted_at + timedelta(seconds=120):
            assert answer.status == "admitted"
            assert answer.admitted_until == c.admitted_at + timedelta(seconds=120)
        else:
            assert answer.status == "expired"
