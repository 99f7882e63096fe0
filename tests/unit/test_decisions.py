"""The decisions of a batch, on a plain-Python inventory: no database, microseconds each."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from boxoffice.domain.commands import (
    Book,
    CancelBooking,
    Command,
    Confirmation,
    ConfirmHold,
    HoldItemRequest,
    Idempotency,
    PlaceHold,
    Released,
    ReleaseHold,
    SweepExpired,
    Swept,
)
from boxoffice.domain.decisions import Changes, Inventory, Outcome, StoredAnswer, decide
from boxoffice.domain.errors import (
    CustomerLimitExceeded,
    EventNotFound,
    HoldExpired,
    HoldNotActive,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InsufficientSeats,
    SectionNotFound,
)
from boxoffice.domain.model import Booking, Hold, HoldItem, Section

EVENT = "11111111-1111-4111-8111-111111111111"
OTHER_EVENT = "22222222-2222-4222-8222-222222222222"
A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
NOW = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)


def new_id_source() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


def inventory(capacity_a: int = 5, capacity_b: int = 5, cap: int | None = None) -> Inventory:
    return Inventory(
        sections={
            A: Section(
                A, EVENT, "A", 1000, capacity_a, capacity_a, version=3, max_per_customer=cap
            ),
            B: Section(
                B, EVENT, "B", 2000, capacity_b, capacity_b, version=7, max_per_customer=cap
            ),
        },
        events={EVENT},
    )


def run(inv: Inventory, *commands: Command, now: datetime = NOW) -> list[Outcome]:
    return list(decide(commands, inv, now, new_id_source()).outcomes)


def test_first_come_first_served_with_refusals_in_between() -> None:
    inv = inventory(capacity_a=4)
    outcomes = run(inv, *(Book(EVENT, A, q) for q in (2, 3, 1, 1, 1)))
    assert [type(o).__name__ for o in outcomes] == [
        "Booking",
        "InsufficientSeats",
        "Booking",
        "Booking",
        "InsufficientSeats",
    ]
    assert isinstance(outcomes[1], InsufficientSeats)
    assert outcomes[1].remaining == 2
    assert (inv.sections[A].remaining, inv.sections[A].sold) == (0, 4)


def test_unknown_targets_are_not_found_and_change_nothing() -> None:
    inv = inventory()
    outcomes = run(
        inv,
        Book(EVENT, "not-a-uuid", 1),
        Book("33333333-3333-4333-8333-333333333333", A, 1),
        Book(OTHER_EVENT, A, 1),
    )
    assert isinstance(outcomes[0], SectionNotFound)
    assert isinstance(outcomes[1], EventNotFound)
    assert isinstance(outcomes[2], EventNotFound)  # OTHER_EVENT is not known to exist
    assert inv.sections[A].remaining == 5


def test_effects_keep_the_version_each_section_was_read_at() -> None:
    inv = inventory()
    decisions = decide(
        [Book(EVENT, A, 1), PlaceHold(EVENT, (HoldItemRequest(B, 2),), 60)],
        inv,
        NOW,
        new_id_source(),
    )
    assert decisions.effects.versions == {A: 3, B: 7}
    assert [r.action for r in decisions.effects.audit] == ["book", "hold"]
    assert decisions.effects.new_holds[0].expires_at == NOW + timedelta(seconds=60)


def test_drawn_is_the_lowest_each_section_fell_to_in_arrival_order() -> None:
    """What PostgreSQL's one statement checks against the true remaining
    (booking/write.py): seats given back before a take offset it, not after it."""
    hold = held(H, NOW + timedelta(minutes=5), (A, 3))

    def drawn(*commands: Command) -> dict[str, int]:
        inv = inventory_with_hold(hold)  # A: 2 remaining, 3 held
        return decide(commands, inv, NOW, new_id_source()).effects.drawn

    assert drawn(Book(EVENT, A, 2), ReleaseHold(H)) == {A: 2}
    assert drawn(ReleaseHold(H), Book(EVENT, A, 2)) == {A: 0}
    assert drawn(ReleaseHold(H), Book(EVENT, A, 4), Book(EVENT, B, 1)) == {A: 1, B: 1}
    assert drawn(Book(EVENT, A, 1), ConfirmHold(H), Book(EVENT, A, 1)) == {A: 2}


def test_a_hold_with_one_short_item_holds_nothing() -> None:
    inv = inventory(capacity_b=1)
    (outcome,) = run(inv, PlaceHold(EVENT, (HoldItemRequest(A, 2), HoldItemRequest(B, 2)), 60))
    assert isinstance(outcome, InsufficientSeats)
    assert (inv.sections[A].remaining, inv.sections[B].remaining) == (5, 1)


def held(
    hold_id: str, expires: datetime, *items: tuple[str, int], customer: str | None = None
) -> Hold:
    return Hold(
        hold_id,
        EVENT,
        customer,
        tuple(HoldItem(section, qty, 1000) for section, qty in items),
        "active",
        expires,
        NOW - timedelta(minutes=5),
    )


def inventory_with_hold(hold: Hold, cap: int | None = None) -> Inventory:
    inv = inventory(cap=cap)
    for item in hold.items:
        inv.sections[item.section_id].hold(item.qty)
    inv.holds[hold.id] = hold
    return inv


H = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"


def test_confirm_turns_each_item_into_a_booking_once() -> None:
    hold = held(H, NOW + timedelta(seconds=1), (A, 2), (B, 1), customer="c1")
    inv = inventory_with_hold(hold)
    confirmed, again = run(inv, ConfirmHold(H, "pi_1"), ConfirmHold(H))
    assert isinstance(confirmed, Confirmation)
    assert [(b.section_id, b.qty, b.payment_reference) for b in confirmed.bookings] == [
        (A, 2, "pi_1"),
        (B, 1, "pi_1"),
    ]
    assert isinstance(again, HoldNotActive)
    assert (inv.sections[A].held, inv.sections[A].sold) == (0, 2)


def test_an_expired_hold_is_given_back_first_and_cannot_be_confirmed() -> None:
    hold = held(H, NOW, (A, 5), customer="c1")
    inv = inventory_with_hold(hold)
    booked, refused, released = run(inv, Book(EVENT, A, 5), ConfirmHold(H), ReleaseHold(H))
    assert isinstance(booked, Booking)
    assert isinstance(refused, HoldExpired)
    assert isinstance(released, Released)  # releasing an expired hold is harmless
    assert inv.holds[H].status == "expired"
    assert all(not item.active for item in inv.holds[H].items)


def test_an_expired_hold_gives_back_only_the_seats_of_loaded_sections() -> None:
    hold = held(H, NOW, (A, 2), (B, 3))
    inv = inventory_with_hold(hold)
    del inv.sections[B]  # another batch's section: not locked by this one
    decisions = decide([SweepExpired(((EVENT, A),))], inv, NOW, new_id_source())
    (swept,) = decisions.outcomes
    assert swept == Swept(2)
    assert decisions.effects.freed_items == [(H, A, EVENT)]
    assert [i.active for i in inv.holds[H].items] == [False, True]


def test_an_expired_hold_frees_its_customers_allowance_once() -> None:
    hold = held(H, NOW, (A, 3), customer="c1")
    inv = inventory_with_hold(hold, cap=4)
    inv.tallies[(EVENT, "c1")] = 3
    booked, refused = run(inv, Book(EVENT, B, 4, "c1"), Book(EVENT, B, 1, "c1"))
    assert isinstance(booked, Booking)
    assert isinstance(refused, CustomerLimitExceeded)
    assert refused.remaining_for_customer == 0
    assert inv.tallies[(EVENT, "c1")] == 4


def test_release_and_cancel_return_tickets_to_a_capped_customer() -> None:
    hold = held(H, NOW + timedelta(minutes=5), (A, 2), customer="c1")
    inv = inventory_with_hold(hold, cap=2)
    inv.tallies[(EVENT, "c1")] = 2
    refused, released, booked = run(
        inv, Book(EVENT, B, 1, "c1"), ReleaseHold(H), Book(EVENT, B, 2, "c1")
    )
    assert isinstance(refused, CustomerLimitExceeded)
    assert isinstance(released, Released)
    assert isinstance(booked, Booking)
    inv.bookings[booked.id] = booked
    (cancelled,) = run(inv, CancelBooking(booked.id))
    assert isinstance(cancelled, Booking)
    assert cancelled.status == "cancelled"
    assert inv.tallies[(EVENT, "c1")] == 0


def test_changes_count_what_a_batch_did_once_each() -> None:
    """The metrics' counts: refusals and replays change nothing, and an expired hold given
    back one section at a time is counted as expired once, by the batch that found it."""
    later = NOW + timedelta(minutes=5)
    to_confirm = held("c1c1c1c1-0000-4000-8000-000000000001", later, (A, 2), (B, 1))
    to_release = held("c1c1c1c1-0000-4000-8000-000000000002", later, (A, 1))
    lapsed = held("c1c1c1c1-0000-4000-8000-000000000003", NOW, (A, 1))
    # Found expired by an earlier batch, which gave back its seats in another section.
    lapsed_before = replace(
        held("c1c1c1c1-0000-4000-8000-000000000004", NOW, (B, 1)), status="expired"
    )
    inv = inventory(capacity_a=10, capacity_b=10)
    for hold in (to_confirm, to_release, lapsed, lapsed_before):
        for item in hold.items:
            inv.sections[item.section_id].hold(item.qty)
        inv.holds[hold.id] = hold
    sold = Booking("b0b0b0b0-0000-4000-8000-000000000001", EVENT, B, 2, 2000, NOW)
    inv.sections[B].sell(2)
    inv.bookings[sold.id] = sold
    key = Idempotency("scope", "k1", "fingerprint")
    inv.answers[key.ident] = StoredAnswer("fingerprint", sold)
    decisions = decide(
        [
            Book(EVENT, A, 1),
            Book(EVENT, A, 100),  # refused
            Book(EVENT, A, 1, idempotency=key),  # replayed: the stored booking again
            PlaceHold(EVENT, (HoldItemRequest(A, 1),), 60),
            ConfirmHold(to_confirm.id),
            ReleaseHold(to_release.id),
            CancelBooking(sold.id),
            CancelBooking(sold.id),  # already cancelled: unchanged
        ],
        inv,
        NOW,
        new_id_source(),
    )
    assert Changes.of(decisions.effects) == Changes(
        bookings=3,  # one booked, two from the confirmed hold's items
        tickets_sold=1 + 3,
        holds_placed=1,
        holds_confirmed=1,
        holds_released=1,
        holds_expired=1,
        bookings_cancelled=1,
    )


def test_idempotency_replays_refuses_reuse_and_waits_for_busy_keys() -> None:
    inv = inventory()
    stored = Booking("b1", EVENT, A, 1, 1000, NOW)
    inv.answers[("c1", "old")] = StoredAnswer("f", stored)
    inv.busy_keys.add(("c1", "busy"))
    outcomes = run(
        inv,
        Book(EVENT, A, 1, "c1", Idempotency("c1", "old", "f")),
        Book(EVENT, A, 2, "c1", Idempotency("c1", "old", "g")),
        Book(EVENT, A, 1, "c1", Idempotency("c1", "busy", "f")),
        Book(EVENT, A, 1, "c1", Idempotency("c1", "new", "f")),
        Book(EVENT, A, 1, "c1", Idempotency("c1", "new", "f")),
    )
    assert outcomes[0] is stored
    assert isinstance(outcomes[1], IdempotencyKeyReused)
    assert isinstance(outcomes[2], IdempotencyInProgress)
    assert isinstance(outcomes[3], Booking)
    assert outcomes[4] is outcomes[3], "a duplicate in the same batch books again"
    assert inv.sections[A].remaining == 4
