"""Events, sections, holds and bookings, and the rules that keep seats honest.

Plain Python: nothing here knows about the database or HTTP. Every seat of a
section is in exactly one of three places, so

    capacity == remaining + held + sold

always; the database enforces the same rule with a CHECK constraint, so a bug
in either place cannot oversell on its own. Seats move between the three only
through the methods of `Section`:

    remaining ──sell──────────────> sold
    remaining ──hold──> held ──sell_held──> sold
    remaining <──free_held── held
    remaining <──free_sold───────── sold      (a cancellation)

A hold past its `expires_at` is expired whether or not anything has noticed:
its seats count as remaining for every reader and every decision (see
`Hold.status_at`), and the first decision that needs them gives them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from boxoffice.domain.errors import InsufficientSeats, InvalidRequest
from boxoffice.domain.money import Cents

MAX_NAME_LENGTH = 200
MAX_SECTIONS_PER_EVENT = 100
MAX_PRICE_CENTS: Cents = 1_000_000 * 100
MAX_CAPACITY = 1_000_000
MAX_PER_CUSTOMER = 10_000
MAX_ITEMS_PER_HOLD = MAX_SECTIONS_PER_EVENT
MAX_CUSTOMER_ID_LENGTH = 128
MAX_ORGANIZER_ID_LENGTH = 64
MAX_PAYMENT_REFERENCE_LENGTH = 255

BookingStatus = Literal["confirmed", "cancelled"]
HoldStatus = Literal["active", "confirmed", "released", "expired"]


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
    max_per_customer: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        if not 1 <= len(self.sections) <= MAX_SECTIONS_PER_EVENT:
            raise InvalidRequest(
                f"An event needs between 1 and {MAX_SECTIONS_PER_EVENT} sections.",
                field="sections",
            )
        if self.max_per_customer is not None and not (
            1 <= self.max_per_customer <= MAX_PER_CUSTOMER
        ):
            raise InvalidRequest(
                f"maxPerCustomer must be between 1 and {MAX_PER_CUSTOMER}.",
                field="maxPerCustomer",
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


class SeatsDisagree(ValueError):
    """Not a customer's mistake: a hold's or a booking's seats are not where the section's
    counts say (stored rows that disagree; or a remembered copy behind them)."""


@dataclass(slots=True)
class Section:
    """A block of identical seats: each one is remaining, held or sold.

    `version` grows with every stored change, so a copy remembered from an
    earlier batch can be checked against the stored row (compare-and-set).
    `max_per_customer` is the event's cap and `organizer_id` its owner, kept here for
    deciding on this section.
    """

    id: str
    event_id: str
    name: str
    price_cents: Cents
    capacity: int
    remaining: int
    held: int = 0
    sold: int = 0
    version: int = 0
    max_per_customer: int | None = None
    organizer_id: str | None = None

    def copy(self) -> Section:
        """A working copy to decide on, leaving this one as it is."""
        # Spelled out: dataclasses.replace takes seven times as long, per section per batch.
        return Section(
            self.id,
            self.event_id,
            self.name,
            self.price_cents,
            self.capacity,
            self.remaining,
            self.held,
            self.sold,
            self.version,
            self.max_per_customer,
            self.organizer_id,
        )

    def sell(self, qty: int) -> None:
        """Sell `qty` free seats, all or none."""
        self._take_free(qty)
        self.sold += qty

    def hold(self, qty: int) -> None:
        """Set `qty` free seats aside for a hold, all or none."""
        self._take_free(qty)
        self.held += qty

    def sell_held(self, qty: int) -> None:
        """A confirmed hold: its seats go from held to sold."""
        self._move(qty, self.held, "held")
        self.held -= qty
        self.sold += qty

    def free_held(self, qty: int) -> None:
        """A released or expired hold: its seats are free again."""
        self._move(qty, self.held, "held")
        self.held -= qty
        self.remaining += qty

    def free_sold(self, qty: int) -> None:
        """A cancelled booking: its seats are free again."""
        self._move(qty, self.sold, "sold")
        self.sold -= qty
        self.remaining += qty

    def _take_free(self, qty: int) -> None:
        if qty < 1:
            raise InvalidRequest("qty must be at least 1.", field="qty")
        if qty > self.remaining:
            raise InsufficientSeats(requested=qty, remaining=self.remaining)
        self.remaining -= qty

    @staticmethod
    def _move(qty: int, available: int, where: str) -> None:
        if not 1 <= qty <= available:
            raise SeatsDisagree(f"cannot move {qty} seats: only {available} are {where}")


@dataclass(slots=True)
class Event:
    id: str
    name: str
    created_at: datetime
    sections: list[Section] = field(default_factory=list)
    max_per_customer: int | None = None
    organizer_id: str | None = None  # None: made with open access, managed by admins only


# Booking, like the audit record and the commands, is made once per request on the hot
# path: a plain slotted dataclass, treated as immutable (changes go through `replace`),
# because a frozen one takes five times as long to construct (4.2 against 0.8 µs).
@dataclass(slots=True)
class Booking:
    id: str
    event_id: str
    section_id: str
    qty: int
    unit_price_cents: Cents
    created_at: datetime
    status: BookingStatus = "confirmed"
    customer_id: str | None = None
    hold_id: str | None = None
    payment_reference: str | None = None
    cancelled_at: datetime | None = None

    @property
    def total_price_cents(self) -> Cents:
        return self.unit_price_cents * self.qty

    def cancelled(self, now: datetime) -> Booking:
        return replace(self, status="cancelled", cancelled_at=now)


@dataclass(frozen=True, slots=True)
class HoldItem:
    """Seats of one section in a hold, at the price of the moment they were held.

    `active` while its seats are counted as held in the section: a settled hold
    (confirmed, released) has no active items; an expired one keeps them active
    until a decision on their section gives the seats back.
    """

    section_id: str
    qty: int
    unit_price_cents: Cents
    active: bool = True

    @property
    def total_price_cents(self) -> Cents:
        return self.unit_price_cents * self.qty


@dataclass(frozen=True, slots=True)
class Hold:
    """Seats set aside for a customer while they pay; confirmed, released or expired."""

    id: str
    event_id: str
    customer_id: str | None
    items: tuple[HoldItem, ...]
    status: HoldStatus
    expires_at: datetime
    created_at: datetime
    settled_at: datetime | None = None

    @property
    def qty(self) -> int:
        return sum(item.qty for item in self.items)

    @property
    def total_price_cents(self) -> Cents:
        return sum(item.total_price_cents for item in self.items)

    def status_at(self, now: datetime) -> HoldStatus:
        """The status as any reader sees it: past `expires_at`, active means expired."""
        if self.status == "active" and now >= self.expires_at:
            return "expired"
        return self.status

    def settled(self, status: HoldStatus, now: datetime) -> Hold:
        """This hold in `status`; confirmed and released holds keep no seats held."""
        items = self.items
        if status in ("confirmed", "released"):
            items = tuple(replace(item, active=False) for item in items)
        return replace(self, status=status, settled_at=now, items=items)

    def without_seats_in(self, section_id: str) -> Hold:
        """This (expired) hold once its seats in `section_id` are free again."""
        return replace(
            self,
            items=tuple(
                replace(item, active=False) if item.section_id == section_id else item
                for item in self.items
            ),
        )


def expiry(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)
