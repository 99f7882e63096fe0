"""OpenAPI links: how one operation's answer feeds the next.

They document the checkout flow for client generators and readers (create an
event, then book or hold in it; confirm or release the hold; cancel the
booking), and schemathesis follows them in its stateful phase, so the fuzzing
exercises real bookings and holds, not only unknown ids.
"""

from __future__ import annotations

from typing import Any

EVENT_ID = "$response.body#/id"
FIRST_SECTION = "$response.body#/sections/0/id"


def _link(operation_id: str, description: str, **kwargs: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "description": description, **kwargs}


def _by_id(operation_id: str, parameter: str, description: str, expression: str) -> dict[str, Any]:
    return _link(operation_id, description, parameters={parameter: expression})


CREATED_EVENT: dict[str, Any] = {
    "GetEvent": _by_id("get_event", "event_id", "The event just created.", EVENT_ID),
    "EventAudit": _by_id("event_audit", "event_id", "Its audit trail.", EVENT_ID),
    "BookFirstSection": _link(
        "book",
        "Book a seat in its first section.",
        requestBody={"eventId": EVENT_ID, "sectionId": FIRST_SECTION, "qty": 1},
    ),
    "HoldFirstSection": _link(
        "place_hold",
        "Hold a seat in its first section.",
        requestBody={"eventId": EVENT_ID, "items": [{"sectionId": FIRST_SECTION, "qty": 1}]},
    ),
}
CREATED_BOOKING: dict[str, Any] = {
    "GetBooking": _by_id("get_booking", "booking_id", "The booking.", "$response.body#/id"),
    "CancelBooking": _by_id(
        "cancel_booking", "booking_id", "Cancel the booking.", "$response.body#/id"
    ),
}
PLACED_HOLD: dict[str, Any] = {
    "GetHold": _by_id("get_hold", "hold_id", "The hold.", "$response.body#/id"),
    "ConfirmHold": _by_id("confirm_hold", "hold_id", "Confirm it.", "$response.body#/id"),
    "ReleaseHold": _by_id("release_hold", "hold_id", "Release it.", "$response.body#/id"),
}
CONFIRMED_HOLD: dict[str, Any] = {
    "CancelFirstBooking": _by_id(
        "cancel_booking",
        "booking_id",
        "Cancel the first booking the hold became.",
        "$response.body#/bookings/0/id",
    ),
}


def links(created: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """A `responses=` entry declaring `created` on the 201."""
    return {201: {"links": created}}
