"""An event's waiting room: its settings, and how many may be let in now.

    RoomSettings (validated)  ┐
    RoomFigures (as measured) ┴─ admissions(now) ─> Admission(count, state, limited_by)

The settings follow Cloudflare Waiting Room's vocabulary (`newUsersPerMinute`,
`totalActiveUsers`, `sessionDuration`, `queueingMethod`), with a pre-queue that
opens before the sale and `suspended` to pause admissions while the line keeps
its order.

What a room in front of the shop cannot do, this one does: it follows the
inventory. A shopper let in is expected to take the average quantity of a
purchase so far, so admissions stop while

    seats left - shoppers inside × average quantity ≤ 0

and resume when seats return (holds lapse, bookings are cancelled). No seat
left, and none held that could come back, is its own state, `sold_out`, which
every waiting ticket is told; seats all held but not yet sold only pause the
line. A cancellation after the sell-out reopens it: the state is decided
afresh on every call, never latched.

`shopping` counts admitted customers still within their session who have not
bought yet: the seats of those who have are out of `seats_left` already, and
counting them again would stall the line near the end of a sale.

Before the first purchase the average is a prior, blended with what is
measured as if it were `PRIOR_WEIGHT` purchases already made, so the first
one or two purchases cannot swing it. The prior is the most one shopper may
take: the event's per-customer limit, or `DEFAULT_PRIOR_QUANTITY` (4) when it
has none. It errs on the side of letting in too few, on purpose. A prior too
low lets in, while a fast pace runs ahead of the first purchases, shoppers
who will find nothing (the whole point of the room is not to): with 500
seats, a prior of 2 (a pair), an average of 2.5 and 6,000 let in a minute,
53 of 261 let in found nothing, 3 with the prior of 4
(tests/unit/test_waiting_room_run.py). Too high only keeps seats idle for
the seconds the first purchases take to be measured, while the loop keeps
asking twice a second.

Pacing by rate spreads `newUsersPerMinute` evenly over the minute: a leaky
bucket kept as one moment, `paced_until` (GCRA's theoretical arrival time),
the moment by which the pace has caught up with everyone it let in. The
bucket holds one customer until the line opens, so a sale opening on a line
of 50,000 at 12,000 a minute lets in 100 every half-second tick, not 12,000
in its first tick (whose holds then queued for seconds behind each other: the
on-sale's p99, bench/onsale). At most `PACE_BURST` (5 s) of the pace, and one
customer more, goes in at once: after the stock held the line, or when
ticks run late on a loaded machine (a 1 s burst lost most of the pace to
ticks 2.5 s apart). A room of 2 a minute lets one in at once and the next
30 s later. On top of it, no more than `newUsersPerMinute` in any 60 s (a
sliding window the storage counts). Plain Python: no clock but the `now` it
is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Literal, get_args

from boxoffice.domain.errors import InvalidRequest

__all__ = [
    "DEFAULT_PRIOR_QUANTITY",
    "MAX_NEW_USERS_PER_MINUTE",
    "MAX_SESSION_DURATION_SECONDS",
    "MAX_TOTAL_ACTIVE_USERS",
    "MIN_SESSION_DURATION_SECONDS",
    "PACE_BURST",
    "PRIOR_WEIGHT",
    "RATE_WINDOW",
    "Admission",
    "PurchaseStats",
    "QueueingMethod",
    "RoomFigures",
    "RoomSettings",
    "RoomState",
    "admissions",
    "pace_room",
    "paced_after",
    "resumed_bucket",
]

QueueingMethod = Literal["fifo", "random", "passthrough", "reject"]
QUEUEING_METHODS: tuple[str, ...] = get_args(QueueingMethod)

# Cloudflare allows 200..2^31-1 new users a minute; a shop this size serves far fewer,
# and 1 keeps tests and small events possible.
MAX_NEW_USERS_PER_MINUTE = 1_000_000
MAX_TOTAL_ACTIVE_USERS = 10_000_000
MIN_SESSION_DURATION_SECONDS = 60  # time to choose seats and pay, at the least
MAX_SESSION_DURATION_SECONDS = 2 * 60 * 60
MAX_PREQUEUE_AHEAD = timedelta(days=7)  # a pre-queue opens at most a week before the sale
RATE_WINDOW = timedelta(minutes=1)
# The most of the pace let in at once (at least one): also the longest a late tick may
# come without losing the pace (ticks run late on a loaded machine).
PACE_BURST = timedelta(seconds=5)

DEFAULT_PRIOR_QUANTITY = 4  # the most one shopper takes, when the event sets no limit
PRIOR_WEIGHT = 10


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """An event's waiting room as its organizer set it; built only valid.

    `opens_at` None opens the line at once; `prequeue_opens_at` None means no
    pre-queue (joining before `opens_at` is refused).
    """

    enabled: bool
    opens_at: datetime | None
    new_users_per_minute: int
    total_active_users: int
    session_duration_seconds: int
    queueing_method: QueueingMethod = "fifo"
    prequeue_opens_at: datetime | None = None
    suspended: bool = False

    def __post_init__(self) -> None:
        _check_int("newUsersPerMinute", self.new_users_per_minute, 1, MAX_NEW_USERS_PER_MINUTE)
        _check_int("totalActiveUsers", self.total_active_users, 1, MAX_TOTAL_ACTIVE_USERS)
        if self.total_active_users < self.new_users_per_minute:
            # As Cloudflare: more let in a minute than may be inside at once is a typo.
            raise InvalidRequest(
                "totalActiveUsers must be at least newUsersPerMinute.", field="totalActiveUsers"
            )
        _check_int(
            "sessionDurationSeconds",
            self.session_duration_seconds,
            MIN_SESSION_DURATION_SECONDS,
            MAX_SESSION_DURATION_SECONDS,
        )
        if self.queueing_method not in QUEUEING_METHODS:
            raise InvalidRequest(
                f"queueingMethod must be one of {', '.join(QUEUEING_METHODS)}.",
                field="queueingMethod",
            )
        for name, moment in (
            ("opensAt", self.opens_at),
            ("prequeueOpensAt", self.prequeue_opens_at),
        ):
            if moment is not None and moment.utcoffset() is None:
                raise InvalidRequest(f"{name} must carry a time zone.", field=name)
        if self.prequeue_opens_at is not None:
            if self.opens_at is None:
                raise InvalidRequest(
                    "prequeueOpensAt needs an opensAt to shuffle at.", field="prequeueOpensAt"
                )
            if self.prequeue_opens_at >= self.opens_at:
                raise InvalidRequest(
                    "prequeueOpensAt must be before opensAt.", field="prequeueOpensAt"
                )
            if self.opens_at - self.prequeue_opens_at > MAX_PREQUEUE_AHEAD:
                raise InvalidRequest(
                    "prequeueOpensAt must be at most 7 days before opensAt.",
                    field="prequeueOpensAt",
                )

    @classmethod
    def read_from(cls, source: object) -> RoomSettings:
        """The settings of anything that has them as attributes of the same names: a
        request's body, a stored row."""
        return cls(**{field.name: getattr(source, field.name) for field in fields(cls)})

    def values(self) -> dict[str, object]:
        """Every setting by name, as stored."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @property
    def moving_per_second(self) -> float:
        """The fastest the line moves: its pace, or 0 while it may not (suspended,
        rejecting)."""
        if self.suspended or self.queueing_method == "reject":
            return 0.0
        return self.new_users_per_minute / 60

    @property
    def session_duration(self) -> timedelta:
        return timedelta(seconds=self.session_duration_seconds)

    def phase(self, now: datetime) -> Literal["closed", "prequeue", "open"]:
        """Whether the line takes joiners yet, and whether it moves."""
        if self.opens_at is None or now >= self.opens_at:
            return "open"
        if self.prequeue_opens_at is not None and now >= self.prequeue_opens_at:
            return "prequeue"
        return "closed"


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}.", field=name)


@dataclass(frozen=True, slots=True)
class PurchaseStats:
    """Purchases made in the event so far, the tickets they took, and the prior: the most
    one shopper may take (the event's per-customer limit, if it has one)."""

    purchases: int = 0
    tickets: int = 0
    prior: int = DEFAULT_PRIOR_QUANTITY

    def average_quantity(self) -> Fraction:
        """Tickets a shopper is expected to take: measured, blended with the prior."""
        weighted = self.tickets + self.prior * PRIOR_WEIGHT
        return max(Fraction(1), Fraction(weighted, self.purchases + PRIOR_WEIGHT))


@dataclass(frozen=True, slots=True)
class RoomFigures:
    """The room's live figures, as the storage counts them at `now`."""

    shopping: int  # admitted, within their session, not tried to buy yet
    admitted_last_minute: int
    seats_left: int  # free to hold or book: neither held nor sold
    waiting: int
    seats_held: int = 0  # in active holds: they come back if the holds lapse
    stats: PurchaseStats = PurchaseStats()
    # Of those shopping, the ones still likely to take seats (let in within the shopper
    # grace); None: all of them.
    likely_buyers: int | None = None
    # The pace's bucket: when it has caught up with everyone it let in (None: nobody yet).
    paced_until: datetime | None = None


RoomState = Literal["off", "closed", "prequeue", "suspended", "rejecting", "open", "sold_out"]
Limit = Literal["rate", "active", "stock", "waiting"]


@dataclass(frozen=True, slots=True)
class Admission:
    """How many of those waiting may be let in now, and why not more."""

    count: int
    state: RoomState
    limited_by: Limit | None = None  # the tightest limit, while the room is open
    paced: bool = False  # whether those let in count against the pace (`paced_after`)


def admissions(settings: RoomSettings, figures: RoomFigures, now: datetime) -> Admission:
    """How many more customers may be admitted at `now`: never more than are waiting, and
    none while sold out, closed, suspended or rejecting."""
    if figures.seats_left <= 0 and figures.seats_held <= 0:
        return Admission(0, "sold_out")
    if not settings.enabled:
        return Admission(figures.waiting, "off")
    phase = settings.phase(now)
    if phase != "open":
        return Admission(0, phase)
    if settings.suspended:
        return Admission(0, "suspended")
    if settings.queueing_method == "reject":
        return Admission(0, "rejecting")
    if settings.queueing_method == "passthrough":
        return Admission(figures.waiting, "open", "waiting")
    room: dict[Limit, int] = {
        "rate": min(
            settings.new_users_per_minute - figures.admitted_last_minute,
            pace_room(settings, figures.paced_until, now),
        ),
        "active": settings.total_active_users - figures.shopping,
        "stock": stock_room(figures),
        "waiting": figures.waiting,
    }
    limited_by = min(room, key=lambda limit: room[limit])
    return Admission(max(0, room[limited_by]), "open", limited_by, paced=True)


def _bucket(
    settings: RoomSettings, paced_until: datetime | None, now: datetime
) -> tuple[Fraction, Fraction, Fraction]:
    """The pace per second, its burst, and how many seconds the bucket is behind `now`:
    never more than a burst's worth at the current pace, so a pace raised mid-sale takes
    effect at once rather than after the old, slower pace's backlog."""
    per_second = Fraction(settings.new_users_per_minute, 60)
    # One customer more than the burst: the tolerance that keeps a slow pace's rate when
    # its ticks come late (a bucket of exactly one lost each tick's lateness for good).
    burst = 1 + per_second * int(PACE_BURST.total_seconds())
    if paced_until is None or paced_until <= now:
        return per_second, burst, Fraction(0)
    behind = Fraction((paced_until - now) // timedelta(microseconds=1), 1_000_000)
    return per_second, burst, min(behind, burst / per_second)


def pace_room(settings: RoomSettings, paced_until: datetime | None, now: datetime) -> int:
    """How many the pace lets in at `now`: a burst (`PACE_BURST` of it, at least one),
    less what the bucket is still behind on."""
    per_second, burst, behind = _bucket(settings, paced_until, now)
    return max(0, math.floor(burst - per_second * behind))


def paced_after(
    settings: RoomSettings,
    decision: Admission,
    paced_until: datetime | None,
    now: datetime,
    admitted: int,
) -> datetime | None:
    """The bucket after a tick that let `admitted` in at `now`.

    Each one let in takes 60 / newUsersPerMinute seconds of the pace, from where the
    bucket stood (now, if it had caught up; a burst ahead at most, at the current pace).
    While the line may not move (before the opening, suspended, rejecting) the bucket is
    kept empty but for one customer, so the line starts, and starts again, at its pace,
    not with a burst.
    """
    per_second, _, behind = _bucket(settings, paced_until, now)
    if decision.state in ("closed", "prequeue", "suspended", "rejecting"):
        return _idle_bucket(settings, now)
    if not decision.paced or (paced_until is None and admitted <= 0):
        return paced_until
    return now + timedelta(seconds=float(behind + admitted / per_second))


def resumed_bucket(
    settings: RoomSettings,
    paced_until: datetime | None,
    since_tick: timedelta | None,
    now: datetime,
) -> datetime | None:
    """The bucket a tick starts from: as the last tick left it, unless no tick has run
    for longer than `PACE_BURST` (the room was off, every process down): then the line
    starts again at its pace, not with the burst its bucket filled to meanwhile."""
    if paced_until is None or (since_tick is not None and since_tick <= PACE_BURST):
        return paced_until
    return _idle_bucket(settings, now)


def _idle_bucket(settings: RoomSettings, now: datetime) -> datetime:
    """The bucket of a line that starts moving at `now`: one customer in it, the rest of
    the burst to come at the pace."""
    per_second, burst, _ = _bucket(settings, None, now)
    return now + timedelta(seconds=float((burst - 1) / per_second))


def stock_room(figures: RoomFigures) -> int:
    """Shoppers the seats left can still serve, beyond those inside: the last one let in
    may find fewer than the average, never nothing."""
    average = figures.stats.average_quantity()
    buyers = figures.shopping if figures.likely_buyers is None else figures.likely_buyers
    free = figures.seats_left - buyers * average
    if free <= 0:
        return 0
    return math.ceil(free / average)
