"""Order keys and the pre-queue shuffle, the watermark, and what a poll is told."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boxoffice.domain.queue_order import (
    FIFO_BASE,
    MAX_POLL_SECONDS,
    MIN_POLL_SECONDS,
    POLLS_BEFORE_ONES_TURN,
    PREQUEUE_TOP,
    RANDOM_BASE,
    RANDOM_TOP,
    Band,
    LineSnapshot,
    Watermark,
    answer_poll,
    estimate_position,
    order_key,
    poll_after_seconds,
)

OPENS = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SESSION = timedelta(minutes=10)

# Chi-square critical values at p = 0.001: a fixed seed makes the test deterministic,
# and a uniform draw passes it with a wide margin, a biased one fails it by far.
CHI2_999 = {15: 37.70, 19: 43.82}


def chi_square(counts: list[int]) -> float:
    expected = sum(counts) / len(counts)
    return sum((c - expected) ** 2 / expected for c in counts)


def rank_counts(
    trials: int, line: int, arrival: int, keys_of: Callable[[random.Random, int], list[int]]
) -> list[int]:
    """How often the `arrival`-th joiner of a pre-queue of `line` ends at each place."""
    draw = random.Random(20261201)
    counts = [0] * line
    for _ in range(trials):
        keys = keys_of(draw, line)
        counts[sorted(keys).index(keys[arrival])] += 1
    return counts


def prequeue_keys(draw: random.Random, line: int) -> list[int]:
    return [order_key("prequeue", sequence=i, watermark=-1, rng=draw) for i in range(line)]


# Order keys -------------------------------------------------------------------------


@pytest.mark.parametrize("arrival", [0, 10, 19])
def test_the_pre_queue_shuffle_gives_every_arrival_every_place_alike(arrival: int) -> None:
    counts = rank_counts(20_000, 20, arrival, prequeue_keys)
    assert chi_square(counts) < CHI2_999[19]


def test_the_uniformity_check_catches_a_line_kept_in_arrival_order() -> None:
    def by_arrival(draw: random.Random, line: int) -> list[int]:
        return [order_key("fifo", sequence=i, watermark=-1) for i in range(line)]

    def nearly_random(draw: random.Random, line: int) -> list[int]:
        # A "shuffle" with a slight edge for early arrivals: the last one's key is
        # pushed back by 1.9 % of the band.
        return [draw.randrange(PREQUEUE_TOP) + i * PREQUEUE_TOP // 1_000 for i in range(line)]

    assert chi_square(rank_counts(2_000, 20, 19, by_arrival)) > CHI2_999[19]
    assert chi_square(rank_counts(20_000, 20, 19, nearly_random)) > CHI2_999[19]


def test_fifo_keys_follow_arrival_behind_the_whole_pre_queue() -> None:
    keys = [order_key("fifo", sequence=n, watermark=-1) for n in range(5)]
    assert keys == sorted(keys) == list(range(FIFO_BASE, FIFO_BASE + 5))
    assert all(key >= PREQUEUE_TOP for key in keys)
    draw = random.Random(1)
    assert max(prequeue_keys(draw, 1_000)) < FIFO_BASE
    with pytest.raises(ValueError, match="sequence"):
        order_key("fifo", sequence=RANDOM_BASE - FIFO_BASE, watermark=-1)


def test_random_joiners_draw_above_the_watermark_in_their_band() -> None:
    draw = random.Random(2)
    watermark = RANDOM_BASE + (RANDOM_TOP - RANDOM_BASE) // 2
    keys = [order_key("random", sequence=0, watermark=watermark, rng=draw) for _ in range(500)]
    assert all(watermark < key < RANDOM_TOP for key in keys)
    low = [order_key("random", sequence=0, watermark=5, rng=draw) for _ in range(500)]
    assert all(RANDOM_BASE <= key < RANDOM_TOP for key in low)
    with pytest.raises(ValueError, match="used up"):
        order_key("random", sequence=0, watermark=RANDOM_TOP - 1)


def test_a_random_joiner_is_exchangeable_with_those_already_waiting() -> None:
    # 30 joined; the watermark then passed 15 of them; a newcomer's place among the
    # 16 now waiting must be uniform, neither favoured nor pushed to the back.
    draw = random.Random(3)
    counts = [0] * 16
    for _ in range(16_000):
        keys = sorted(order_key("random", sequence=0, watermark=-1, rng=draw) for _ in range(30))
        watermark = keys[14]
        waiting = keys[15:]
        newcomer = order_key("random", sequence=0, watermark=watermark, rng=draw)
        counts[sum(key < newcomer for key in waiting)] += 1
    assert chi_square(counts) < CHI2_999[15]


# The watermark ----------------------------------------------------------------------


@given(
    st.lists(st.tuples(st.integers(0, 600), st.integers(-1, 10_000)), max_size=30),
)
def test_the_watermark_never_moves_back_however_stale_its_refreshes(
    steps: list[tuple[int, int]],
) -> None:
    mark = Watermark()
    admitted: dict[int, datetime] = {}
    for seconds, key in steps:
        moved = mark.advanced(OPENS + timedelta(seconds=seconds), key)
        assert moved.key >= mark.key
        for probe, first_seen in admitted.items():
            assert moved.admitted_at(probe) == first_seen  # nobody un-admitted or re-timed
        for probe in (key, key - 1, mark.key, moved.key):
            if (when := moved.admitted_at(probe)) is not None:
                admitted[probe] = when
        mark = moved
    times = [at for at, _ in mark.steps]
    assert times == sorted(times)


def test_admission_times_follow_the_steps() -> None:
    mark = Watermark().merged(
        [(OPENS + timedelta(seconds=2), 200), (OPENS, 100), (OPENS + timedelta(seconds=1), 50)]
    )
    # The late-read (1 s, 50) step is stale behind (0 s, 100) and changes nothing.
    assert mark.steps == ((OPENS, 100), (OPENS + timedelta(seconds=2), 200))
    assert mark.admitted_at(0) == OPENS
    assert mark.admitted_at(100) == OPENS
    assert mark.admitted_at(101) == OPENS + timedelta(seconds=2)
    assert mark.admitted_at(201) is None
    assert Watermark().admitted_at(0) is None


def test_steps_older_than_a_session_are_folded_into_the_floor() -> None:
    mark = Watermark().merged(
        [(OPENS, 100), (OPENS + timedelta(seconds=5), 200), (OPENS + timedelta(seconds=9), 300)]
    )
    kept = mark.since(OPENS + timedelta(seconds=5))
    assert kept.floor == 200
    assert kept.key == 300
    assert kept.admitted_at(150) is None
    assert kept.admitted_at(201) == OPENS + timedelta(seconds=9)
    assert mark.since(OPENS - timedelta(seconds=1)) == mark
    emptied = mark.since(OPENS + timedelta(seconds=60))
    assert emptied.key == 300  # everyone is still admitted, no longer when
    assert emptied.advanced(OPENS + timedelta(seconds=61), 250) == emptied


# Polls ------------------------------------------------------------------------------


def snapshot(
    *, mark: Watermark, pace: float = 10.0, sold_out: bool = False, fifo_issued: int = 1_000
) -> LineSnapshot:
    return LineSnapshot(
        mark,
        (
            Band(0, PREQUEUE_TOP, 0),
            Band(
                FIFO_BASE, FIFO_BASE + fifo_issued, max(0, FIFO_BASE + fifo_issued - mark.key - 1)
            ),
            Band(RANDOM_BASE, RANDOM_TOP, 0),
        ),
        pace,
        SESSION,
        sold_out,
    )


MARK = Watermark().advanced(OPENS, FIFO_BASE + 99)  # the first 100 fifo joiners are in


def test_an_admitted_ticket_carries_its_session() -> None:
    answer = answer_poll(FIFO_BASE + 99, snapshot(mark=MARK), OPENS + timedelta(minutes=1))
    assert answer.status == "admitted"
    assert answer.admitted_until == OPENS + SESSION
    assert answer.position is None


def test_an_admitted_ticket_expires_with_its_session() -> None:
    answer = answer_poll(FIFO_BASE, snapshot(mark=MARK), OPENS + SESSION)
    assert answer.status == "expired"
    folded = snapshot(mark=MARK.since(OPENS))
    assert answer_poll(FIFO_BASE, folded, OPENS).status == "expired"


def test_a_waiting_fifo_ticket_knows_its_place_and_wait() -> None:
    answer = answer_poll(FIFO_BASE + 149, snapshot(mark=MARK, pace=10.0), OPENS)
    assert (answer.status, answer.position, answer.estimated_wait_seconds) == ("waiting", 50, 5)
    assert answer.poll_after_seconds == 1


def test_sold_out_is_told_to_the_waiting_not_to_the_admitted() -> None:
    sold = snapshot(mark=MARK, sold_out=True)
    assert answer_poll(FIFO_BASE + 500, sold, OPENS).status == "sold_out"
    assert answer_poll(FIFO_BASE + 5, sold, OPENS).status == "admitted"


def test_a_line_that_does_not_move_polls_at_the_longest_interval() -> None:
    answer = answer_poll(FIFO_BASE + 149, snapshot(mark=MARK, pace=0.0), OPENS)
    assert answer.status == "waiting"
    assert answer.estimated_wait_seconds is None
    assert answer.poll_after_seconds == MAX_POLL_SECONDS


def test_a_line_held_back_by_the_stock_keeps_its_front_polling_soon() -> None:
    """Barely moving (one a minute), the line's front is still told to poll as soon as its
    turn could come at the room's own pace: when seats return it hears at once. Its back,
    whose turn cannot come soon at any pace, polls at the longest interval."""
    crawl = replace(snapshot(mark=MARK, pace=1 / 60, fifo_issued=100_000), fastest_per_second=100.0)
    front = answer_poll(FIFO_BASE + 149, crawl, OPENS)  # 50th: 0.5 s at the room's pace
    assert (front.position, front.estimated_wait_seconds) == (50, 3_000)  # told honestly
    assert front.poll_after_seconds == MIN_POLL_SECONDS
    middle = answer_poll(FIFO_BASE + 10_099, crawl, OPENS)  # 10,000th: 100 s at best
    assert middle.poll_after_seconds == 10
    back = answer_poll(FIFO_BASE + 90_099, crawl, OPENS)
    assert back.poll_after_seconds == MAX_POLL_SECONDS
    # Only the places the stock could still serve: the rest cannot be let in soon at any
    # pace, and a line of a million would otherwise poll as if it could.
    scarce = replace(crawl, servable_places=1_000)
    assert answer_poll(FIFO_BASE + 149, scarce, OPENS).poll_after_seconds == MIN_POLL_SECONDS
    assert answer_poll(FIFO_BASE + 10_099, scarce, OPENS).poll_after_seconds == MAX_POLL_SECONDS
    # A suspended room (no pace of its own) and a line not moving: the longest.
    stopped = replace(snapshot(mark=MARK, pace=0.0), fastest_per_second=0.0)
    assert answer_poll(FIFO_BASE + 149, stopped, OPENS).poll_after_seconds == MAX_POLL_SECONDS
    # A line moving faster than the room's pace (a burst measured over a short span):
    # the measured wait, the sooner, is the one polls follow.
    quick = replace(snapshot(mark=MARK, pace=100.0), fastest_per_second=1.0)
    assert answer_poll(FIFO_BASE + 599, quick, OPENS).poll_after_seconds == 1


def test_a_pre_queue_place_is_estimated_from_its_key() -> None:
    mark = Watermark()
    line = LineSnapshot(
        mark, (Band(0, PREQUEUE_TOP, 1_000), Band(FIFO_BASE, FIFO_BASE + 500, 500)), 10.0, SESSION
    )
    assert estimate_position(0, line) == 1
    assert estimate_position(PREQUEUE_TOP // 4, line) == 251
    assert estimate_position(FIFO_BASE, line) == 1_001  # behind the whole pre-queue
    assert estimate_position(FIFO_BASE + 250, line) == 1_251


@given(st.integers(0, RANDOM_TOP), st.integers(0, RANDOM_TOP), st.integers(-1, RANDOM_TOP))
def test_a_place_further_back_is_never_estimated_ahead(a: int, b: int, w: int) -> None:
    mark = Watermark().advanced(OPENS, w) if w >= 0 else Watermark()
    line = LineSnapshot(
        mark,
        (
            Band(0, PREQUEUE_TOP, 700),
            Band(FIFO_BASE, FIFO_BASE + 300, 120),
            Band(RANDOM_BASE, RANDOM_TOP, 90),
        ),
        5.0,
        SESSION,
    )
    low, high = sorted((a, b))
    assert 1 <= estimate_position(low, line) <= estimate_position(high, line) <= 911


@given(st.integers(0, 10**7), st.integers(0, 10**7))
def test_poll_after_grows_with_the_wait_within_its_bounds(a: int, b: int) -> None:
    short, long = sorted((a, b))
    assert MIN_POLL_SECONDS <= poll_after_seconds(short) <= poll_after_seconds(long)
    assert poll_after_seconds(long) <= MAX_POLL_SECONDS


def test_poll_after_at_the_front_and_far_back() -> None:
    assert poll_after_seconds(0) == MIN_POLL_SECONDS
    assert poll_after_seconds(45) == 5
    assert poll_after_seconds(3_600) == MAX_POLL_SECONDS


@given(st.one_of(st.none(), st.integers(0, 10**7)), st.integers(MIN_POLL_SECONDS, 300))
def test_poll_after_never_exceeds_the_operators_longest(wait: int | None, longest: int) -> None:
    told = poll_after_seconds(wait, longest=longest)
    assert MIN_POLL_SECONDS <= told <= longest
    assert told == min(poll_after_seconds(wait, longest=300), longest)


def test_every_answer_keeps_to_the_snapshots_longest_interval() -> None:
    """WAITING_ROOM_MAX_POLL_SECONDS, carried by the snapshot: far back, a line that does
    not move, admitted, expired and sold out are all told at most that."""
    capped = replace(snapshot(mark=MARK, pace=0.1), max_poll_seconds=4)
    assert snapshot(mark=MARK, pace=0.1).max_poll_seconds == MAX_POLL_SECONDS
    answers = [
        answer_poll(FIFO_BASE + 999, capped, OPENS),
        answer_poll(FIFO_BASE + 999, replace(capped, admitted_per_second=0.0), OPENS),
        answer_poll(FIFO_BASE + 5, capped, OPENS),
        answer_poll(FIFO_BASE + 5, capped, OPENS + SESSION),
        answer_poll(FIFO_BASE + 999, replace(capped, sold_out=True), OPENS),
    ]
    statuses = [answer.status for answer in answers]
    assert statuses == ["waiting", "waiting", "admitted", "expired", "sold_out"]
    assert [answer.poll_after_seconds for answer in answers] == [4] * 5
    assert answer_poll(FIFO_BASE + 100, capped, OPENS).poll_after_seconds == 1  # the front


def test_polls_per_wait_spreads_a_waiting_clients_polls() -> None:
    """WAITING_ROOM_POLLS_PER_WAIT, carried by the snapshot: half as many polls per wait
    tells a waiting place to come back twice as late, within the same bounds."""
    assert poll_after_seconds(90) == 9
    assert poll_after_seconds(90, polls=5) == 18
    assert poll_after_seconds(3, polls=5) == MIN_POLL_SECONDS
    assert poll_after_seconds(3_600, polls=2) == MAX_POLL_SECONDS
    line = snapshot(mark=MARK, pace=1.0)
    assert line.polls_per_wait == POLLS_BEFORE_ONES_TURN
    default = answer_poll(FIFO_BASE + 199, line, OPENS)
    fewer = answer_poll(FIFO_BASE + 199, replace(line, polls_per_wait=5), OPENS)
    assert (fewer.position, fewer.estimated_wait_seconds) == (
        default.position,
        default.estimated_wait_seconds,
    )
    assert default.poll_after_seconds > MIN_POLL_SECONDS
    assert fewer.poll_after_seconds == 2 * default.poll_after_seconds


def test_no_polls_per_wait_is_refused_before_any_poll_divides_by_it() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        poll_after_seconds(90, polls=0)
    with pytest.raises(ValueError, match="at least 1"):
        replace(snapshot(mark=MARK, pace=1.0), polls_per_wait=0)


def _every_band(key: int, snapshot: LineSnapshot) -> int:
    """The estimate summed over every band, as it was before the loop stopped early."""
    ahead = 0.0
    for band in snapshot.bands:
        start = max(band.low, snapshot.watermark.key + 1)
        if band.top <= start or key < start:
            continue
        ahead += band.waiting * min(1.0, (key - start) / (band.top - start))
    return 1 + int(ahead)


@given(
    st.integers(0, RANDOM_TOP),
    st.integers(-1, RANDOM_TOP),
    st.lists(st.integers(0, 400), min_size=1, max_size=32),
)
def test_stopping_at_the_first_band_past_the_key_changes_no_estimate(
    key: int, w: int, buckets: list[int]
) -> None:
    """The fifo band in buckets, as published: stopping early is only faster."""
    mark = Watermark().advanced(OPENS, w) if w >= 0 else Watermark()
    width = 1000
    bands = (
        Band(0, PREQUEUE_TOP, 700),
        *(
            Band(FIFO_BASE + i * width, FIFO_BASE + (i + 1) * width, n)
            for i, n in enumerate(buckets)
        ),
        Band(RANDOM_BASE, RANDOM_TOP, 90),
    )
    line = LineSnapshot(mark, bands, 5.0, SESSION)
    inside = [FIFO_BASE + i * width + offset for i in range(len(buckets)) for offset in (1, 499)]
    for probe in (key, PREQUEUE_TOP // 3, *inside, RANDOM_BASE + 7):
        assert estimate_position(probe, line) == _every_band(probe, line), probe


def _place_counted_band_by_band(key: int, line: LineSnapshot) -> Fraction:
    """The estimate's meaning, in exact arithmetic: each band's waiting spread evenly over
    its keys above the watermark, counted for the keys below `key`."""
    first = line.watermark.key + 1
    ahead = Fraction(0)
    for band in line.bands:
        start = max(band.low, first)
        if band.top <= start or key < start:
            continue
        ahead += band.waiting * min(Fraction(1), Fraction(key - start, band.top - start))
    return 1 + ahead


@st.composite
def fifo_buckets(draw: st.DrawFn) -> tuple[Band, ...]:
    """Up to 40 bands in key order without overlap, as the admission loop publishes them."""
    widths = draw(st.lists(st.integers(1, 10**9), min_size=0, max_size=40))
    gaps = draw(st.lists(st.integers(0, 10**6), min_size=len(widths), max_size=len(widths)))
    bands, low = [], draw(st.integers(0, FIFO_BASE))
    for width, gap in zip(widths, gaps, strict=True):
        low += gap
        bands.append(Band(low, low + width, draw(st.integers(0, 10_000))))
        low += width
    return tuple(bands)


@given(fifo_buckets(), st.data())
def test_a_place_is_every_band_before_it_counted_in_part_or_whole(
    bands: tuple[Band, ...], data: st.DataObject
) -> None:
    """The running totals give what counting band by band gives, wherever the key and the
    watermark fall: in a band, between bands, before or after them all."""
    edges = [0, FIFO_BASE * 2] + [key for band in bands for key in (band.low, band.top)]
    near = st.sampled_from(edges).flatmap(lambda edge: st.integers(edge - 2, edge + 2))
    w = data.draw(st.one_of(near, st.integers(-1, FIFO_BASE * 2)).filter(lambda k: k >= -1))
    mark = Watermark().advanced(OPENS, w) if w >= 0 else Watermark()
    line = LineSnapshot(mark, bands, 5.0, SESSION)
    key = data.draw(st.one_of(near, st.integers(0, FIFO_BASE * 2)).filter(lambda k: k >= 0))
    exact = _place_counted_band_by_band(key, line)
    found = estimate_position(key, line)
    edge = Fraction(1, 10**6)
    if edge < exact - math.floor(exact) < 1 - edge:  # not at the very edge of a place
        assert found == math.floor(exact)
    else:
        assert abs(found - math.floor(exact)) <= 1
