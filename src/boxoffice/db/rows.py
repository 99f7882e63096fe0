"""Stored rows as domain objects: one mapping per table, for every reader and the loader."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from boxoffice.domain.access import ApiKey
from boxoffice.domain.model import Booking, Hold, HoldItem, Section


def section_from_row(row: Any) -> Section:
    """A section row joined with its event's `max_per_customer` and `organizer_id`."""
    return Section(
        str(row.id),
        str(row.event_id),
        row.name,
        row.price_cents,
        row.capacity,
        row.remaining,
        row.held,
        row.sold,
        row.version,
        row.max_per_customer,
        row.organizer_id,
    )


def hold_item_from_row(row: Any) -> HoldItem:
    return HoldItem(str(row.section_id), row.qty, row.unit_price_cents, row.active)


def hold_from_row(row: Any, items: Sequence[HoldItem]) -> Hold:
    return Hold(
        id=str(row.id),
        event_id=str(row.event_id),
        customer_id=row.customer_id,
        items=tuple(items),
        status=row.status,
        expires_at=row.expires_at,
        created_at=row.created_at,
        settled_at=row.settled_at,
    )


def holds_from_rows(rows: Iterable[Any]) -> list[tuple[Hold, Any]]:
    """Holds read joined with their items (a row per item, with its `position`), in the
    order first seen; each with one of its rows, for what else the query joined in."""
    first: dict[str, Any] = {}
    items: dict[str, list[tuple[int, HoldItem]]] = {}
    for row in rows:
        ident = str(row.id)
        first.setdefault(ident, row)
        items.setdefault(ident, []).append((row.position, hold_item_from_row(row)))
    return [
        (hold_from_row(row, [item for _, item in sorted(items[ident])]), row)
        for ident, row in first.items()
    ]


def booking_from_row(row: Any) -> Booking:
    return Booking(
        id=str(row.id),
        event_id=str(row.event_id),
        section_id=str(row.section_id),
        qty=row.qty,
        unit_price_cents=row.unit_price_cents,
        created_at=row.created_at,
        status=row.status,
        customer_id=row.customer_id,
        hold_id=None if row.hold_id is None else str(row.hold_id),
        payment_reference=row.payment_reference,
        cancelled_at=row.cancelled_at,
    )


def api_key_from_row(row: Any) -> ApiKey:
    """An API key row (any selection with its listed columns), without its secret."""
    return ApiKey(
        row.id,
        row.role,
        row.name,
        row.customer_id,
        row.organizer_id,
        row.created_at,
        row.expires_at,
        row.revoked_at,
    )
