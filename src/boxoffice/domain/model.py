"""Events, sections and bookings, and the rules that keep seats honest.

Plain Python: nothing here knows about the database or HTTP. The database
enforces the same inventory rule (`0 <= remaining <= capacity`) with a CHECK
constraint, so a bug in either place cannot oversell on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from boxoffice.domain.errors import InsufficientSeats, InvalidRequest
from boxoffice.domain.money import Cents

MAX_NAME_LENGTH = 200
MAX_SECTIONS_PER_EVENT = 100
MAX_PRICE_CENTS: Cents = 1_000_000 * 100
MAX_CAPACITY = 1_000_000

BookingStatus = Literal["confirmed"]


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """What an organizer asks for when creating a section."""

    name: str
    price_cents: Cents
    capacity: int


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What an organizer asks for when creating an event; validated on creation."""

    name: str
    sections: tuple[SectionSpec, ...]

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        if not 1 <= len(self.sections) <= MAX_SECTIONS_PER_EVENT:
            raise InvalidRequest(
                f"An event needs between 1 and {MAX_SECTIONS_PER_EVENT} sections.",
                field="sections",
            )
        seen: set[str] = set()
        for index, section in enumerate(self.sections):
            where = f"sections.{index}"
            _check_name(section.name, f"{where}.name")
            if not 0 <= section.price_cents <= MAX_PRICE_CENTS:
                raise InvalidRequest(
                    "A price must be between 0 and 1000000.", field=f"{where}.price"
                )
            if not 1 <= section.capacity <= MAX_CAPACITY:
                raise InvalidRequest(
                    f"A capacity must be between 1 and {MAX_CAPACITY}.",
                    field=f"{where}.capacity",
                )
            key = section.name.casefold()
            if key in seen:
                raise InvalidRequest(
                    f"Section name {section.name!r} is used twice in this event.",
                    field=f"{where}.name",
                )
            seen.add(key)


def _check_name(name: str, where: str) -> None:
    if not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(
            f"A name must have between 1 and {MAX_NAME_LENGTH} characters, not all blank.",
            field=where,
        )


@dataclass(slots=True)
class Section:
    """A block of identical seats; `remaining` never leaves `[0, capacity]`."""

    id: str
    event_id: str
    name: str
    price_cents: Cents
    capacity: int
    remaining: int

    def copy(self) -> Section:
        """A working copy to decide on, leaving this one as it is."""
        # Spelled out: dataclasses.replace takes seven times as long, per section per batch.
        return Section(
            self.id, self.event_id, self.name, self.price_cents, self.capacity, self.remaining
        )

    @property
    def sold(self) -> int:
        return self.capacity - self.remaining

    def reserve(self, qty: int) -> None:
        """Take `qty` seats, all or none."""
        if qty < 1:
            raise InvalidRequest("qty must be at least 1.", field="qty")
        if qty > self.remaining:
            raise InsufficientSeats(requested=qty, remaining=self.remaining)
        self.remaining -= qty

    def release(self, qty: int) -> None:
        """Give back `qty` seats that were reserved before."""
        if qty < 1 or self.remaining + qty > self.capacity:
            raise ValueError(f"cannot release {qty} seats: only {self.sold} are sold")
        self.remaining += qty


@dataclass(slots=True)
class Event:
    id: str
    name: str
    created_at: datetime
    sections: list[Section] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BookingRequest:
    """A customer's ask: `qty` seats in one section of one event."""

    event_id: str
    section_id: str
    qty: int

    def check_quantity(self, max_tickets_per_booking: int) -> None:
        """Refuse quantities outside the per-booking limit before touching the database."""
        if not 1 <= self.qty <= max_tickets_per_booking:
            raise InvalidRequest(
                f"qty must be between 1 and {max_tickets_per_booking}.", field="qty"
            )


@dataclass(frozen=True, slots=True)
class Booking:
    id: str
    event_id: str
    section_id: str
    qty: int
    unit_price_cents: Cents
    created_at: datetime
    status: BookingStatus = "confirmed"

    @property
    def total_price_cents(self) -> Cents:
        return self.unit_price_cents * self.qty
