"""The domain's error tree; the HTTP edge maps each to one problem+json status.

    BoxofficeError
    ├── NotFound                 404 not_found
    │   ├── EventNotFound
    │   ├── SectionNotFound
    │   └── BookingNotFound
    ├── InvalidRequest           400 validation_error
    └── InsufficientSeats        400 insufficient_seats (carries `remaining`)

Infrastructure failures (the database is down or locked for too long) are not
domain errors: see `boxoffice.db.errors.DatabaseUnavailable`.
"""

from __future__ import annotations

from typing import Any


class BoxofficeError(Exception):
    """Base of every error a use case can raise on purpose."""

    code: str = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def extensions(self) -> dict[str, Any]:
        """Extra problem+json members that help the client act on the error."""
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle rebuilds exceptions as `cls(*args)`, which keyword-only or differently
        # shaped constructors refuse; SQLite's writer process sends these back whole.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[BoxofficeError], args: tuple[Any, ...], state: dict[str, Any]
) -> BoxofficeError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class NotFound(BoxofficeError):
    code = "not_found"


class EventNotFound(NotFound):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"Event {event_id!r} was not found.")


class SectionNotFound(NotFound):
    def __init__(self, event_id: str, section_id: str) -> None:
        super().__init__(f"Section {section_id!r} was not found in event {event_id!r}.")


class BookingNotFound(NotFound):
    def __init__(self, booking_id: str) -> None:
        super().__init__(f"Booking {booking_id!r} was not found.")


class InvalidRequest(BoxofficeError):
    """A request that is well-formed JSON but breaks a business limit."""

    code = "validation_error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field

    def extensions(self) -> dict[str, Any]:
        if self.field is None:
            return {}
        return {"errors": [{"field": self.field, "message": self.detail}]}


class InsufficientSeats(BoxofficeError):
    """The section has fewer seats left than the booking asks for."""

    code = "insufficient_seats"

    def __init__(self, *, requested: int, remaining: int) -> None:
        super().__init__(f"Not enough seats available: requested {requested}, {remaining} left.")
        self.requested = requested
        self.remaining = remaining

    def extensions(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "requested": self.requested}
