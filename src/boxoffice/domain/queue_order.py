"""The order of the line, the watermark that moves through it, and a poll's answer.

    join ──order_key()──> key, signed into the ticket
    admission loop ──> Watermark: every key ≤ W is admitted (steps: when W passed where)
    poll(ticket) + LineSnapshot ──answer_poll()──> waiting | admitted | expired | sold_out

A poll must be answered without the database and without per-poll shared
state. Its ticket carries its order key; each process keeps the event's
watermark and a few live counts (a `LineSnapshot`) that it refreshes a few
times a second. That is enough: a key at or below the watermark was
admitted, when the watermark passed it (its session's start) is in the
watermark's steps, and a key above it waits, at a place estimated from the
counts.

The key space has three bands, so one comparison orders everyone:

    [0, 2^48)      pre-queue: a uniformly random key drawn at join
    [2^48, 2^49)   after opening, fifo: 2^48 + the join's sequence number
    [2^49, 2^50)   after opening, random: uniform in (max(W, 2^49), 2^50)

Admitting the pre-queue in key order *is* the shuffle at the start: a
uniformly random key gives every pre-queue joiner the same chance of every
place, whenever they joined, so arriving at 09:59:59.9 gives no edge over
09:55, and no ticket has to be re-issued when the sale opens. Everyone who
joins after opening goes behind the whole pre-queue. A `random` joiner draws
uniformly above the watermark: those waiting in that band are uniform above
it too (a uniform variable conditioned on exceeding W stays uniform), so the
newcomer is exchangeable with them and the next one admitted is any waiting
customer with equal chance, which is what Cloudflare's `random` promises.
(Switching method mid-sale sends new fifo joiners ahead of waiting random ones;
the opposite switch sends new random ones behind the fifo band. The line's
existing order is never changed.)

The alternative, a shuffle done once at opening, would re-issue every
pre-queue ticket at that instant (a write storm exactly when load peaks) or
keep per-ticket state to look up on each poll. Keys are below 2^53, so they
survive JSON and a double, and fit a BIGINT.

A place is estimated, not counted: within each band, the waiting are spread
evenly over the keys above the watermark, so the place of key k is the
waiting of the bands below plus its band's waiting × (k - start) / (top -
start). In the fifo band that is exact but for those who left.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

__all__ = [
    "FIFO_BASE",
    "MAX_POLL_SECONDS",
    "MIN_POLL_SECONDS",
    "POLLS_BEFORE_ONES_TURN",
    "PREQUEUE_TOP",
    "RANDOM_BASE",
    "RANDOM_TOP",
    "Band",
    "LineSnapshot",
    "PollAnswer",
    "Watermark",
    "answer_poll",
    "estimate_position",
    "order_key",
    "poll_after_seconds",
]

PREQUEUE_TOP = 2**48
FIFO_BASE = 2**48
RANDOM_BASE = 2**49
RANDOM_TOP = 2**50
NOBODY = -1  # the watermark before anyone is admitted

MIN_POLL_SECONDS = 1
MAX_POLL_SECONDS = 30  # the longest a client is told to wait, unless the operator sets another
POLLS_BEFORE_ONES_TURN = 10  # a waiting client polls about this often before its turn, by default

Joining = Literal["prequeue", "fifo", "random"]


def order_key(
    joining: Joining, *, sequence: int, watermark: int, rng: random.Random | None = None
) -> int:
    """The order key of a customer joining now: drawn for the pre-queue and `random`,
    the join's `sequence` (0, 1, 2, ... per event) for `fifo`."""
    draw = rng or random.SystemRandom()
    if joining == "prequeue":
        return draw.randrange(PREQUEUE_TOP)
    if joining == "fifo":
        if not 0 <= sequence < RANDOM_BASE - FIFO_BASE:
            raise ValueError("a join sequence is from 0 to 2^48 - 1")
        return FIFO_BASE + sequence
    low = max(watermark + 1, RANDOM_BASE)
    if low >= RANDOM_TOP:
        raise ValueError("the random band is used up")
    return draw.randrange(low, RANDOM_TOP)


@dataclass(frozen=True, slots=True)
class Watermark:
    """Every order key ≤ `key` is admitted; `steps` say when the watermark passed where.

    Steps are (when, key), both increasing. Only those within a session of now
    need keeping (`since`): keys ≤ `floor` were admitted before the oldest step
    kept, at a moment no longer known, and their sessions are over.
    """

    steps: tuple[tuple[datetime, int], ...] = ()
    floor: int = NOBODY

    @property
    def key(self) -> int:
        return self.steps[-1][1] if self.steps else self.floor

    def advanced(self, at: datetime, key: int) -> Watermark:
        """This watermark moved to `key` at `at`; a stale or backward step changes nothing,
        so refreshing from a lagging source can never un-admit anyone."""
        if key <= self.key or (self.steps and at < self.steps[-1][0]):
            return self
        return Watermark((*self.steps, (at, key)), self.floor)

    def merged(self, steps: Sequence[tuple[datetime, int]]) -> Watermark:
        """This watermark with `steps` (as read from storage, in any order) applied."""
        merged = self
        for at, key in sorted(steps):
            merged = merged.advanced(at, key)
        return merged

    def since(self, moment: datetime) -> Watermark:
        """Only the steps taken after `moment`: those admitted at or before it are
        remembered as admitted (the floor), no longer when."""
        dropped = bisect.bisect_right(self.steps, moment, key=_step_time)
        if dropped == 0:
            return self
        return Watermark(self.steps[dropped:], self.steps[dropped - 1][1])

    def admitted_at(self, key: int) -> datetime | None:
        """When `key` was admitted; None if it was not, or before the steps kept."""
        if key > self.key or key <= self.floor:
            return None
        # Every poll comes here: a binary search over the steps, no list built.
        return self.steps[bisect.bisect_left(self.steps, key, key=_step_key)][0]


def _step_time(step: tuple[datetime, int]) -> datetime:
    return step[0]


def _step_key(step: tuple[datetime, int]) -> int:
    return step[1]


@dataclass(frozen=True, slots=True)
class Band:
    """Customers waiting with keys in [low, top)."""

    low: int
    top: int
    waiting: int


@dataclass(frozen=True, slots=True)
class LineSnapshot:
    """What a process knows of an event's line, refreshed a few times a second; `bands`
    in key order, without overlap (as the storage publishes them)."""

    watermark: Watermark
    bands: tuple[Band, ...]
    admitted_per_second: float  # the recent pace; 0 while nobody is let in
    session: timedelta
    sold_out: bool = False
    # WAITING_ROOM_MAX_POLL_SECONDS: the longest `pollAfterSeconds` any answer gives, so
    # how late, at worst, a client that polls as told learns its turn or the sell-out.
    max_poll_seconds: int = MAX_POLL_SECONDS
    # WAITING_ROOM_POLLS_PER_WAIT: a waiting client is told to poll again after about this
    # fraction of its wait; fewer polls cost less, and tell a turn later by as much.
    polls_per_wait: int = POLLS_BEFORE_ONES_TURN
    # The room's own pace (newUsersPerMinute / 60; 0 while suspended): the fastest the line
    # can move, so when a waiting place's turn can come soonest.
    fastest_per_second: float = 0.0
    # How many of those waiting the stock could still serve (None: not known yet): beyond
    # them no pace brings a turn soon, and polls follow the likely wait.
    servable_places: int | None = None
    # Made once per snapshot for `estimate_position`: each band's low key, and how many
    # wait in the bands before it.
    band_lows: tuple[int, ...] = field(init=False, repr=False, compare=False)
    waiting_before: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.polls_per_wait < 1:  # every poll would divide by it
            raise ValueError(f"polls_per_wait must be at least 1, not {self.polls_per_wait}")
        object.__setattr__(self, "band_lows", tuple(band.low for band in self.bands))
        counts = itertools.accumulate((band.waiting for band in self.bands), initial=0)
        object.__setattr__(self, "waiting_before", tuple(counts))


@dataclass(frozen=True, slots=True)
class PollAnswer:
    status: Literal["waiting", "admitted", "expired", "sold_out"]
    poll_after_seconds: int
    position: int | None = None
    estimated_wait_seconds: int | None = None
    admitted_until: datetime | None = None


def estimate_position(key: int, snapshot: LineSnapshot) -> int:
    """The estimated place of a waiting key: 1 is the front of the line.

    Those waiting in a band are taken as spread evenly over its keys above the
    watermark. Every poll comes here, so it costs two binary searches whatever the
    number of bands (the fifo band is published in buckets): only the band at the
    head of the line and the key's own band are counted in part, and every band
    between them whole, from the snapshot's running totals.
    """
    first = snapshot.watermark.key + 1
    last = bisect.bisect_right(snapshot.band_lows, key) - 1  # the key's band, or the one before
    if key < first or last < 0:
        return 1
    head = bisect.bisect_right(snapshot.band_lows, first) - 1  # where the line's head falls
    bands = snapshot.bands
    if head == last:
        return 1 + math.floor(_share(bands[last], max(first, bands[last].low), key))
    ahead = 0.0 if head < 0 else _share(bands[head], first, key)
    ahead += snapshot.waiting_before[last] - snapshot.waiting_before[head + 1]
    ahead += _share(bands[last], bands[last].low, key)
    return 1 + math.floor(ahead)


def _share(band: Band, start: int, key: int) -> float:
    """How many of `band`'s waiting, spread evenly over [start, top), have keys below `key`."""
    if band.top <= start or key < start:
        return 0.0
    return band.waiting * min(1.0, (key - start) / (band.top - start))


def poll_after_seconds(
    estimated_wait_seconds: int | None,
    *,
    longest: int = MAX_POLL_SECONDS,
    polls: int = POLLS_BEFORE_ONES_TURN,
) -> int:
    """How long a waiting client should wait before polling again: about 1/`polls` of its
    wait, so later places poll less often, within [MIN_POLL_SECONDS, `longest`]; the
    longest while the line does not move."""
    if polls < 1:
        raise ValueError(f"polls must be at least 1, not {polls}")
    if estimated_wait_seconds is None:
        return longest
    after = math.ceil(estimated_wait_seconds / polls)
    return max(MIN_POLL_SECONDS, min(longest, after))


def answer_poll(key: int, snapshot: LineSnapshot, now: datetime) -> PollAnswer:
    """What a poll with a ticket of order `key` is told at `now`."""
    longest = snapshot.max_poll_seconds
    if key <= snapshot.watermark.key:
        admitted_at = snapshot.watermark.admitted_at(key)
        if admitted_at is None or now >= admitted_at + snapshot.session:
            return PollAnswer("expired", longest)
        return PollAnswer("admitted", longest, admitted_until=admitted_at + snapshot.session)
    if snapshot.sold_out:
        return PollAnswer("sold_out", longest)
    position = estimate_position(key, snapshot)
    wait = _wait(position, snapshot.admitted_per_second)
    # Polls are paced by the soonest the turn can come, not the likely wait: a line held
    # back by the stock barely moves, then lets its front in the moment seats return, and
    # its front would hear of it a whole `longest` late (the last minute of a sale).
    servable = snapshot.servable_places
    reachable = servable is None or position <= servable
    soonest = _wait(position, snapshot.fastest_per_second) if reachable else None
    told = wait if soonest is None or (wait is not None and wait < soonest) else soonest
    after = poll_after_seconds(told, longest=longest, polls=snapshot.polls_per_wait)
    return PollAnswer("waiting", after, position, wait)


def _wait(position: int, per_second: float) -> int | None:
    return math.ceil(position / per_second) if per_second > 0 else None
