"""Domain errors cross SQLite's writer process pickled; every one must come back whole."""

from __future__ import annotations

import pickle

import pytest

from boxoffice.domain.errors import (
    BookingNotFound,
    BoxofficeError,
    EventNotFound,
    InsufficientSeats,
    InvalidRequest,
    NotFound,
    SectionNotFound,
)

ERRORS = [
    InsufficientSeats(requested=3, remaining=1),
    InvalidRequest("qty must be between 1 and 10.", field="qty"),
    InvalidRequest("no field"),
    EventNotFound("e1"),
    SectionNotFound("e1", "s1"),
    BookingNotFound("b1"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_a_domain_error_survives_pickling(error: BoxofficeError) -> None:
    copy = pickle.loads(pickle.dumps(error, pickle.HIGHEST_PROTOCOL))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.detail == error.detail
    assert copy.code == error.code
    assert copy.extensions() == error.extensions()


def _subclasses(cls: type[BoxofficeError]) -> set[type[BoxofficeError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_concrete_domain_error_is_checked_above() -> None:
    checked = {type(error) for error in ERRORS}
    abstract = {NotFound}  # raised only through its subclasses
    assert _subclasses(BoxofficeError) - abstract <= checked
