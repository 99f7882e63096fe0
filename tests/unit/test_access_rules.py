"""The access rules as plain Python (`domain/access.py`), and the decisions that apply them."""

from __future__ import annotations

import pytest

from boxoffice.domain.access import OPEN_ACCESS, PERMISSIONS, PUBLIC_OPERATIONS, ROLES, Principal
from boxoffice.domain.errors import Forbidden

ALICE = Principal("k1", "customer", customer_id="alice")
ACME = Principal("k2", "organizer", organizer_id="acme")
ADMIN = Principal("k3", "admin")


def test_customers_see_their_own_only() -> None:
    assert ALICE.may_see(customer_id="alice", organizer_id="acme")
    assert not ALICE.may_see(customer_id="bob", organizer_id="acme")
    assert not ALICE.may_see(customer_id=None, organizer_id=None)  # anonymous: nobody's


def test_organizers_see_their_events_only() -> None:
    assert ACME.may_see(customer_id="bob", organizer_id="acme")
    assert not ACME.may_see(customer_id="bob", organizer_id="other")
    assert not ACME.may_see(customer_id="bob", organizer_id=None)  # no owner: admins only
    assert ACME.may_sell_in("acme")
    assert not ACME.may_sell_in("other")
    assert ALICE.may_sell_in("other")  # a customer buys anywhere, for itself


def test_admins_and_open_access_see_everything() -> None:
    for who in (ADMIN, OPEN_ACCESS):
        assert who.may_see(customer_id="x", organizer_id=None)
        assert who.may_manage_event(None)
        for operation in PERMISSIONS:
            who.require(operation)
        assert who.customer_for("anyone") == "anyone"


def test_a_customer_key_decides_the_customer() -> None:
    assert ALICE.customer_for(None) == "alice"
    assert ALICE.customer_for("alice") == "alice"
    with pytest.raises(Forbidden):
        ALICE.customer_for("bob")


def test_roles_gate_functions_as_the_table_says() -> None:
    with pytest.raises(Forbidden):
        ALICE.require("create_event")
    with pytest.raises(Forbidden):
        ACME.require("create_key")
    with pytest.raises(Forbidden):
        ACME.require("join_queue")  # staff queue for nobody
    ACME.require("book")
    ALICE.require("book")
    ALICE.require("get_hold")  # any key; whose hold it may see is the object-level rule


def test_the_public_operations_need_no_role_and_the_rest_name_theirs() -> None:
    assert {"list_events", "get_event", "poll_queue", "healthz", "readyz"} == PUBLIC_OPERATIONS
    for operation, rule in PERMISSIONS.items():
        assert rule.objects, operation
        assert rule.public == (operation in PUBLIC_OPERATIONS)
        assert all(rule.allows(role) for role in ROLES) == (
            rule.public or set(rule.roles) | {"admin"} == set(ROLES)
        )
        assert rule.allows("admin")


def test_idempotency_keys_belong_to_the_key_or_its_customer() -> None:
    assert ALICE.idempotency_scope() == "alice"
    assert ALICE.idempotency_scope("alice") == "alice"
    assert ACME.idempotency_scope("walk-in") == "key:k2"
    assert OPEN_ACCESS.idempotency_scope("c1") == "c1"  # the body's customer, as before keys
    assert OPEN_ACCESS.idempotency_scope() is None


def test_decisions_treat_others_objects_as_unknown() -> None:
    from datetime import timedelta

    from boxoffice.domain.commands import Book, CancelBooking, ConfirmHold, ReleaseHold
    from boxoffice.domain.errors import BookingNotFound, EventNotFound, HoldNotFound
    from boxoffice.domain.model import Booking
    from tests.unit.test_decisions import EVENT, NOW, A, H, held, inventory_with_hold, run

    hold = held(H, NOW + timedelta(minutes=5), (A, 1), customer="alice")
    inv = inventory_with_hold(hold)
    for section in inv.sections.values():
        section.organizer_id = "acme"
    booking = Booking(
        "00000000-0000-4000-8000-0000000000b1", EVENT, A, 1, 1000, NOW, customer_id="alice"
    )
    inv.bookings[booking.id] = booking
    inv.sections[A].sell(1)
    bob = Principal("k9", "customer", customer_id="bob")
    other = Principal("k8", "organizer", organizer_id="other")
    outcomes = run(
        inv,
        ConfirmHold(H, actor=bob),
        ReleaseHold(H, actor=other),
        CancelBooking(booking.id, actor=bob),
        Book(EVENT, A, 1, "walk-in", actor=other),
    )
    assert [type(o) for o in outcomes] == [
        HoldNotFound,
        HoldNotFound,
        BookingNotFound,
        EventNotFound,
    ]
    assert (inv.sections[A].held, inv.sections[A].sold) == (1, 1)  # nothing moved
    owner_side = run(inv, ConfirmHold(H, actor=ACME), Book(EVENT, A, 1, "walk-in", actor=ACME))
    assert [type(o).__name__ for o in owner_side] == ["Confirmation", "Booking"]
