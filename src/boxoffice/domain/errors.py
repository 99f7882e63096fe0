"""The domain's error tree; the HTTP edge maps each to one problem+json status.

    BoxofficeError
    ├── Unauthorized               401 unauthorized (no key, or not a valid one)
    ├── Forbidden                  403 forbidden (the key's role may not do this)
    │   ├── AdmissionRequired          admission_required: the event's waiting room is on
    │   └── AdmissionInvalid           admission_invalid: forged, expired, someone else's
    ├── NotFound                   404 not_found
    │   ├── EventNotFound
    │   ├── SectionNotFound
    │   ├── BookingNotFound
    │   ├── HoldNotFound
    │   ├── KeyNotFound
    │   ├── WaitingRoomNotFound
    │   └── QueueTicketInvalid         queue_ticket_invalid (forged or malformed)
    ├── InvalidRequest             400 validation_error
    ├── InsufficientSeats          400 insufficient_seats (carries `remaining`)
    ├── Conflict                   409: the request is fine, the state of things says no
    │   ├── HoldExpired                hold_expired
    │   ├── HoldNotActive              hold_not_active (confirmed or released already)
    │   ├── CustomerLimitExceeded      customer_limit_exceeded (`limit`, `remainingForCustomer`)
    │   ├── ActiveHoldLimit            active_hold_limit (`limit`): too many holds at once
    │   ├── QueueNotOpen               queue_not_open: no room on, or before its pre-queue
    │   └── IdempotencyInProgress      idempotency_in_progress (retry after a moment)
    ├── IdempotencyKeyReused       422 idempotency_key_reused (same key, different request)
    ├── HoldChurnLimit             429 hold_churn_limit (`limit`, + Retry-After): too many holds
    │                              given up (released or lapsed) in the last hour
    └── PollTooSoon                429 poll_too_soon (+ Retry-After): a queue ticket polled
                                   faster than its `pollAfterSeconds`

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
        return (rebuild_error, (type(self), self.args, self.__dict__))


def rebuild_error(
    cls: type[BoxofficeError], args: tuple[Any, ...], state: dict[str, Any]
) -> BoxofficeError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


NEEDS_A_KEY = "A valid API key is needed: Authorization: Bearer <key>."


class Unauthorized(BoxofficeError):
    """No API key, or one that is unknown, revoked or expired: which, is not said."""

    code = "unauthorized"

    def __init__(self, detail: str = NEEDS_A_KEY) -> None:
        super().__init__(detail)


class Forbidden(BoxofficeError):
    """The key is valid, but its role may not do this (function-level authorization)."""

    code = "forbidden"


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


class KeyNotFound(NotFound):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} was not found.")


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


class HoldNotFound(NotFound):
    def __init__(self, hold_id: str) -> None:
        super().__init__(f"Hold {hold_id!r} was not found.")


class Conflict(BoxofficeError):
    """The request is well-formed, but the current state of things refuses it."""

    code = "conflict"


class HoldExpired(Conflict):
    code = "hold_expired"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"Hold {hold_id!r} has expired; its seats are free again.")


class HoldNotActive(Conflict):
    code = "hold_not_active"

    def __init__(self, hold_id: str, status: str) -> None:
        super().__init__(f"Hold {hold_id!r} is {status}, not active.")
        self.status = status

    def extensions(self) -> dict[str, Any]:
        return {"holdStatus": self.status}


class CustomerLimitExceeded(Conflict):
    """The customer would have more tickets in the event than its `maxPerCustomer`."""

    code = "customer_limit_exceeded"

    def __init__(self, *, limit: int, remaining_for_customer: int, requested: int) -> None:
        super().__init__(
            f"At most {limit} tickets per customer for this event: requested {requested}, "
            f"{remaining_for_customer} more allowed."
        )
        self.limit = limit
        self.remaining_for_customer = remaining_for_customer
        self.requested = requested

    def extensions(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "remainingForCustomer": self.remaining_for_customer,
            "requested": self.requested,
        }


class ActiveHoldLimit(Conflict):
    """The customer has MAX_ACTIVE_HOLDS_PER_CUSTOMER active holds already."""

    code = "active_hold_limit"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"At most {limit} active holds per customer: confirm or release one first."
        )
        self.limit = limit

    def extensions(self) -> dict[str, Any]:
        return {"limit": self.limit}


class HoldChurnLimit(BoxofficeError):
    """The customer gave up (released, or let lapse) too many holds in the last hour: holding
    and letting go again and again keeps seats from everyone else."""

    code = "hold_churn_limit"

    def __init__(self, limit: int, retry_after_seconds: int) -> None:
        super().__init__(
            f"At most {limit} holds released or expired per customer per hour: "
            f"try again in {retry_after_seconds} s."
        )
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds

    def extensions(self) -> dict[str, Any]:
        return {"limit": self.limit}


class IdempotencyInProgress(Conflict):
    """A request with the same idempotency key is still being processed."""

    code = "idempotency_in_progress"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still in progress; retry after a moment."
        )


class IdempotencyKeyReused(BoxofficeError):
    """The idempotency key was first used for a different request."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request; "
            "use a new key for a new request."
        )


class AdmissionRequired(Forbidden):
    """The event's waiting room is on: buying needs the customer's admission token."""

    code = "admission_required"

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"Event {event_id!r} sells through its waiting room: join the line "
            "(POST /events/{id}/queue), and send the admission token it gives you as "
            "the Admission-Token header."
        )


class AdmissionInvalid(Forbidden):
    """An admission token that is forged, expired, or for another customer or event."""

    code = "admission_invalid"

    def __init__(self) -> None:
        super().__init__(
            "The Admission-Token is not valid for this customer and event, or its session "
            "is over: poll your queue ticket again."
        )


class WaitingRoomNotFound(NotFound):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"Event {event_id!r} has no waiting room.")


class QueueTicketInvalid(NotFound):
    """A ticket that was not signed by this service: no such place in any line."""

    code = "queue_ticket_invalid"

    def __init__(self) -> None:
        super().__init__("This queue ticket is not one this service issued.")


class QueueNotOpen(Conflict):
    """The line takes no joiners now: the room is off, not open yet, or rejecting."""

    code = "queue_not_open"

    def __init__(self, detail: str, *, opens_at: str | None = None) -> None:
        super().__init__(detail)
        self.opens_at = opens_at

    def extensions(self) -> dict[str, Any]:
        return {} if self.opens_at is None else {"opensAt": self.opens_at}


class PollTooSoon(BoxofficeError):
    """A ticket polled again before the `pollAfterSeconds` it was told."""

    code = "poll_too_soon"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            f"Poll this ticket again in {retry_after_seconds} s, as its last answer said."
        )
        self.retry_after_seconds = retry_after_seconds
