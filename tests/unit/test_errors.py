"""Domain errors cross SQLite's writer process pickled, and are stored as idempotent
answers in JSON: every one must come back whole both ways."""

from __future__ import annotations

import pickle

import pytest

from boxoffice.domain.errors import (
    ActiveHoldLimit,
    AdmissionInvalid,
    AdmissionRequired,
    BookingNotFound,
    BoxofficeError,
    Conflict,
    CustomerLimitExceeded,
    EventNotFound,
    Forbidden,
    HoldChurnLimit,
    HoldExpired,
    HoldNotActive,
    HoldNotFound,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InsufficientSeats,
    InvalidRequest,
    KeyNotFound,
    NotFound,
    PollTooSoon,
    QueueNotOpen,
    QueueTicketInvalid,
    SectionNotFound,
    Unauthorized,
    WaitingRoomNotFound,
)
from boxoffice.services.idempotency import decode, encode

ERRORS = [
    InsufficientSeats(requested=3, remaining=1),
    InvalidRequest("qty must be between 1 and 10.", field="qty"),
    InvalidRequest("no field"),
    EventNotFound("e1"),
    SectionNotFound("e1", "s1"),
    BookingNotFound("b1"),
    HoldNotFound("h1"),
    HoldExpired("h1"),
    HoldNotActive("h1", "confirmed"),
    CustomerLimitExceeded(limit=4, remaining_for_customer=1, requested=2),
    IdempotencyInProgress(),
    IdempotencyKeyReused(),
    Unauthorized(),
    Forbidden("This needs a key with the role organizer."),
    KeyNotFound("0123456789abcdef"),
    ActiveHoldLimit(5),
    HoldChurnLimit(20, 1234),
    AdmissionRequired("e1"),
    AdmissionInvalid(),
    WaitingRoomNotFound("e1"),
    QueueTicketInvalid(),
    QueueNotOpen("not yet", opens_at="2026-12-24T10:00:00+00:00"),
    QueueNotOpen("never"),
    PollTooSoon(7),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_a_domain_error_survives_pickling(error: BoxofficeError) -> None:
    copy = pickle.loads(pickle.dumps(error, pickle.HIGHEST_PROTOCOL))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.detail == error.detail
    assert copy.code == error.code
    assert copy.extensions() == error.extensions()


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_a_domain_error_survives_being_stored_as_an_answer(error: BoxofficeError) -> None:
    copy = decode(encode(error))
    assert isinstance(copy, BoxofficeError)
    assert type(copy) is type(error)
    assert (copy.detail, copy.code, copy.extensions()) == (
        error.detail,
        error.code,
        error.extensions(),
    )


def _subclasses(cls: type[BoxofficeError]) -> set[type[BoxofficeError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_concrete_domain_error_is_checked_above() -> None:
    checked = {type(error) for error in ERRORS}
    abstract = {NotFound, Conflict}  # raised only through its subclasses
    assert _subclasses(BoxofficeError) - abstract <= checked


def test_only_races_a_second_look_resolves_are_retried() -> None:
    from sqlalchemy.exc import IntegrityError, OperationalError

    from boxoffice.booking.locked import worth_a_second_look
    from boxoffice.booking.write import LostUpdate
    from boxoffice.db.errors import DatabaseUnavailable

    class Deadlock(Exception):
        sqlstate = "40P01"

    wrapped = DatabaseUnavailable("deadlock")
    wrapped.__cause__ = OperationalError("UPDATE", {}, Deadlock())
    assert worth_a_second_look(LostUpdate("hold expired meanwhile"))
    assert worth_a_second_look(wrapped)
    assert worth_a_second_look(
        IntegrityError("INSERT", {}, Exception('violates "pk_idempotency_keys"'))
    )
    assert not worth_a_second_look(IntegrityError("INSERT", {}, Exception("ck_sections_seats")))
    assert not worth_a_second_look(DatabaseUnavailable("connection refused"))
    assert not worth_a_second_look(RuntimeError("a bug"))
