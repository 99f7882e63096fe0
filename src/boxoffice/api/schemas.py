"""Request and response bodies, in the original API's camelCase.

Requests are strict: unknown fields are refused (nobody can slip `remaining`
or `price` into a booking), integers must be JSON integers, and names are
trimmed. Money is a JSON number with at most two decimals; inside it is exact
(integer cents), and it is rendered from cents, so `totalPrice` is exactly
`unitPrice × qty`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from boxoffice.domain.access import ApiKey
from boxoffice.domain.audit import AuditRecord
from boxoffice.domain.commands import Confirmation
from boxoffice.domain.fraud import Flag
from boxoffice.domain.model import (
    MAX_CAPACITY,
    MAX_CUSTOMER_ID_LENGTH,
    MAX_ITEMS_PER_HOLD,
    MAX_NAME_LENGTH,
    MAX_ORGANIZER_ID_LENGTH,
    MAX_PAYMENT_REFERENCE_LENGTH,
    MAX_PER_CUSTOMER,
    MAX_SECTIONS_PER_EVENT,
    Booking,
    Event,
    Hold,
    HoldStatus,
    Section,
)
from boxoffice.domain.money import from_cents
from boxoffice.domain.waiting_room import (
    MAX_NEW_USERS_PER_MINUTE,
    MAX_SESSION_DURATION_SECONDS,
    MAX_TOTAL_ACTIVE_USERS,
    MIN_SESSION_DURATION_SECONDS,
    QueueingMethod,
    RoomSettings,
)
from boxoffice.services.keys import NewKey
from boxoffice.services.waiting_room import Room

ID_MAX_LENGTH = 64


def _money_json(value: Decimal) -> int | float:
    # Amounts are below 2**53 cents, so the shortest float repr is the exact decimal.
    return int(value) if value == value.to_integral_value() else float(value)


Money = Annotated[
    Decimal,
    PlainSerializer(_money_json, return_type=Any, when_used="json"),
    WithJsonSchema({"type": "number", "examples": [49.99]}),
]
# No control characters (NUL, newlines…) in free text: PostgreSQL's text refuses NUL.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[
    str,
    StringConstraints(
        strict=True,
        strip_whitespace=True,
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=NO_CONTROL_CHARACTERS,
    ),
]
Id = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=ID_MAX_LENGTH)]
CustomerId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=MAX_CUSTOMER_ID_LENGTH, pattern=r"^[\x21-\x7e]+$"
    ),
    Field(description="Your id for the customer: 1 to 128 printable ASCII characters, no spaces."),
]
OrganizerId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=MAX_ORGANIZER_ID_LENGTH, pattern=r"^[\x21-\x7e]+$"
    ),
]
Quantity = Annotated[
    StrictInt,
    Field(ge=1, le=1000, description="Seats; at most MAX_TICKETS_PER_BOOKING (default 10)."),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, validate_by_name=False)


class _Response(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, serialize_by_alias=True, validate_by_name=True
    )


class SectionIn(_Request):
    name: Name
    price: Annotated[
        Decimal,
        Field(ge=0, le=1_000_000, decimal_places=2, allow_inf_nan=False, examples=[49.99]),
    ]
    capacity: Annotated[StrictInt, Field(ge=1, le=MAX_CAPACITY)]


class EventIn(_Request):
    name: Name
    sections: Annotated[list[SectionIn], Field(min_length=1, max_length=MAX_SECTIONS_PER_EVENT)]
    max_per_customer: Annotated[
        StrictInt | None,
        Field(
            ge=1,
            le=MAX_PER_CUSTOMER,
            description="Most tickets one customerId may have in this event (holds + bookings).",
        ),
    ] = None
    organizer_id: Annotated[
        OrganizerId | None,
        Field(description="Admins only: the organizer it belongs to (a key's organizerId)."),
    ] = None


class BookIn(_Request):
    event_id: Id
    section_id: Id
    qty: Quantity
    customer_id: CustomerId | None = None


class HoldItemIn(_Request):
    section_id: Id
    qty: Quantity


class HoldIn(_Request):
    event_id: Id
    items: Annotated[list[HoldItemIn], Field(min_length=1, max_length=MAX_ITEMS_PER_HOLD)]
    customer_id: CustomerId | None = None
    ttl_seconds: Annotated[
        StrictInt | None,
        Field(
            ge=1,
            le=86_400,
            description="Lifetime in seconds: HOLD_TTL_MIN_SECONDS (30) to "
            "HOLD_TTL_MAX_SECONDS (3600); default HOLD_TTL_SECONDS (600).",
        ),
    ] = None


class ConfirmIn(_Request):
    payment_reference: Annotated[
        str | None,
        StringConstraints(
            strict=True,
            min_length=1,
            max_length=MAX_PAYMENT_REFERENCE_LENGTH,
            pattern=NO_CONTROL_CHARACTERS,
        ),
        Field(description="Your payment provider's id for the payment (a Stripe PaymentIntent)."),
    ] = None


class SectionOut(_Response):
    id: str
    name: str
    price: Money
    capacity: int
    remaining: int = Field(description="Free to book now (seats of expired holds included).")
    held: int = Field(description="Set aside by active holds.")
    sold: int = Field(description="In confirmed bookings.")

    @classmethod
    def of(cls, section: Section) -> SectionOut:
        return cls(
            id=section.id,
            name=section.name,
            price=from_cents(section.price_cents),
            capacity=section.capacity,
            remaining=section.remaining,
            held=section.held,
            sold=section.sold,
        )


class EventOut(_Response):
    id: str
    name: str
    created_at: datetime
    max_per_customer: int | None
    sections: list[SectionOut]

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(
            id=event.id,
            name=event.name,
            created_at=event.created_at,
            max_per_customer=event.max_per_customer,
            sections=[SectionOut.of(section) for section in event.sections],
        )


class BookingOut(_Response):
    id: str
    event_id: str
    section_id: str
    qty: int
    unit_price: Money
    total_price: Money
    status: Literal["confirmed", "cancelled"]
    created_at: datetime
    customer_id: str | None
    hold_id: str | None
    payment_reference: str | None
    cancelled_at: datetime | None

    @classmethod
    def of(cls, booking: Booking) -> BookingOut:
        return cls(
            id=booking.id,
            event_id=booking.event_id,
            section_id=booking.section_id,
            qty=booking.qty,
            unit_price=from_cents(booking.unit_price_cents),
            total_price=from_cents(booking.total_price_cents),
            status=booking.status,
            created_at=booking.created_at,
            customer_id=booking.customer_id,
            hold_id=booking.hold_id,
            payment_reference=booking.payment_reference,
            cancelled_at=booking.cancelled_at,
        )


class HoldItemOut(_Response):
    section_id: str
    qty: int
    unit_price: Money
    total_price: Money


class HoldOut(_Response):
    id: str
    event_id: str
    items: list[HoldItemOut]
    total_price: Money
    customer_id: str | None
    status: HoldStatus
    expires_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, hold: Hold, now: datetime) -> HoldOut:
        return cls(
            id=hold.id,
            event_id=hold.event_id,
            items=[
                HoldItemOut(
                    section_id=item.section_id,
                    qty=item.qty,
                    unit_price=from_cents(item.unit_price_cents),
                    total_price=from_cents(item.total_price_cents),
                )
                for item in hold.items
            ],
            total_price=from_cents(hold.total_price_cents),
            customer_id=hold.customer_id,
            status=hold.status_at(now),
            expires_at=hold.expires_at,
            created_at=hold.created_at,
        )


class ConfirmationOut(_Response):
    hold: HoldOut
    bookings: list[BookingOut]

    @classmethod
    def of(cls, confirmation: Confirmation, now: datetime) -> ConfirmationOut:
        return cls(
            hold=HoldOut.of(confirmation.hold, now),
            bookings=[BookingOut.of(booking) for booking in confirmation.bookings],
        )


class FlagOut(_Response):
    """A suspicious pattern noticed (`domain/fraud.py`): for a person to look at."""

    seq: int = Field(description="Its place in the list of flags (oldest first).")
    rule: Literal["max_quantity_repeat", "many_refusals", "hold_churn", "shared_address"]
    at: datetime
    event_id: str | None
    customer_id: str | None
    key_id: str | None = Field(description="The public id of the API key, if one was used.")
    address: str | None = Field(description="The client address the requests came from.")
    evidence: dict[str, Any] = Field(description="What was counted: counts, window, codes.")

    @classmethod
    def of(cls, flag: Flag) -> FlagOut:
        assert flag.seq is not None
        return cls(
            seq=flag.seq,
            rule=flag.rule,
            at=flag.at,
            event_id=flag.event_id,
            customer_id=flag.customer_id,
            key_id=flag.key_id,
            address=flag.address,
            evidence=flag.evidence,
        )


class AuditRecordOut(_Response):
    seq: int
    at: datetime
    event_id: str
    section_id: str | None
    action: str = Field(description="create, book, hold, confirm, release, expire or cancel.")
    qty: int
    outcome: Literal["ok", "refused"]
    reason: str | None = Field(description="The error code of a refusal.")
    customer_id: str | None
    hold_id: str | None
    booking_id: str | None
    request_id: str | None

    @classmethod
    def of(cls, record: AuditRecord) -> AuditRecordOut:
        assert record.seq is not None
        return cls(
            seq=record.seq,
            at=record.at,
            event_id=record.event_id,
            section_id=record.section_id,
            action=record.action,
            qty=record.qty,
            outcome=record.outcome,
            reason=record.reason,
            customer_id=record.customer_id,
            hold_id=record.hold_id,
            booking_id=record.booking_id,
            request_id=record.request_id,
        )


class WaitingRoomIn(_Request):
    """An event's waiting room, in Cloudflare Waiting Room's vocabulary."""

    enabled: bool = True
    prequeue_opens_at: AwareDatetime | None = Field(
        None, description="When joining starts; those who join before opensAt are shuffled."
    )
    opens_at: AwareDatetime | None = Field(
        None, description="When admissions start; none: at once."
    )
    new_users_per_minute: Annotated[
        StrictInt, Field(ge=1, le=MAX_NEW_USERS_PER_MINUTE, description="Admissions a minute.")
    ]
    total_active_users: Annotated[
        StrictInt,
        Field(
            ge=1,
            le=MAX_TOTAL_ACTIVE_USERS,
            description="Most admitted shoppers inside at once (at least newUsersPerMinute).",
        ),
    ]
    session_duration_seconds: Annotated[
        StrictInt,
        Field(
            ge=MIN_SESSION_DURATION_SECONDS,
            le=MAX_SESSION_DURATION_SECONDS,
            description="How long an admitted shopper may buy.",
        ),
    ] = 600
    queueing_method: QueueingMethod = "fifo"
    suspended: bool = Field(False, description="Pause admissions; the line keeps its order.")

    def settings(self) -> RoomSettings:
        return RoomSettings.read_from(self)


class WaitingRoomFiguresOut(_Response):
    state: str = Field(description="off, closed, prequeue, suspended, rejecting, open or sold_out.")
    limited_by: str | None = Field(
        description="While open: what holds admissions back (rate, active, stock, waiting)."
    )
    waiting: int
    active_shoppers: int
    admitted: int = Field(description="Admitted so far.")
    admitted_last_minute: int
    seats_left: int
    seats_held: int
    average_quantity: float = Field(description="Tickets a shopper is expected to take.")
    sold_out: bool
    measured_at: datetime


class WaitingRoomOut(_Response):
    event_id: str
    enabled: bool
    prequeue_opens_at: datetime | None
    opens_at: datetime | None
    new_users_per_minute: int
    total_active_users: int
    session_duration_seconds: int
    queueing_method: QueueingMethod
    suspended: bool
    figures: WaitingRoomFiguresOut | None = Field(
        description="As the admission loop measured them last; none before its first turn."
    )

    @classmethod
    def of(cls, room: Room) -> WaitingRoomOut:
        published = room.published
        figures = (
            None
            if published is None or room.published_at is None
            else WaitingRoomFiguresOut(
                state=published.state,
                limited_by=published.limited_by,
                waiting=published.waiting,
                active_shoppers=published.shopping,
                admitted=published.admitted_total,
                admitted_last_minute=published.admitted_last_minute,
                seats_left=published.seats_left,
                seats_held=published.seats_held,
                average_quantity=published.average_quantity,
                sold_out=published.sold_out,
                measured_at=room.published_at,
            )
        )
        return cls(event_id=room.event_id, figures=figures, **room.settings.values())


class QueueJoinIn(_Request):
    """Only with open access (BOXOFFICE_OPEN_ACCESS): a customer key joins as itself."""

    customer_id: CustomerId | None = None


class QueueTicketOut(_Response):
    ticket: str = Field(description="Opaque; poll GET /queue/{ticket} with it.")
    event_id: str
    status: Literal["waiting", "admitted", "expired", "sold_out"]
    position: int | None = Field(description="While waiting: your estimated place, 1 first.")
    estimated_wait_seconds: int | None = Field(
        description="While waiting: the estimate at the recent pace; none while the line "
        "does not move."
    )
    poll_after_seconds: int = Field(description="Poll again after this long, not sooner.")
    admission_token: str | None = Field(
        description="Once admitted: send it as the Admission-Token header to book or hold."
    )
    admitted_until: datetime | None = Field(description="When the admitted session ends.")


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document, plus a stable machine-readable `code`."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[FieldError] | None = Field(None, description="Per-field validation errors.")
    remaining: int | None = Field(None, description="Seats left (insufficient_seats).")
    requested: int | None = Field(None, description="Seats asked for.")
    limit: int | None = Field(None, description="The event's maxPerCustomer.")
    remaining_for_customer: int | None = Field(
        None,
        alias="remainingForCustomer",
        description="Tickets the customer may still take (customer_limit_exceeded).",
    )
    status_of_hold: str | None = Field(None, alias="holdStatus", description="hold_not_active.")
    opens_at: str | None = Field(
        None, alias="opensAt", description="When the line opens (queue_not_open)."
    )

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, by_alias=True)


class KeyIn(_Request):
    role: Literal["admin", "organizer", "customer"]
    name: Name | None = None
    customer_id: CustomerId | None = None
    organizer_id: Annotated[
        OrganizerId | None,
        Field(description="Organizer keys: an existing organizer's id (a second key for it)."),
    ] = None
    expires_at: datetime | None = None


class KeyOut(_Response):
    """An API key as listed: never its secret."""

    id: str
    role: str
    name: str | None
    customer_id: str | None
    organizer_id: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls.model_validate(key, from_attributes=True)  # the same fields, by name


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, never again.")

    @classmethod
    def made(cls, made: NewKey) -> NewKeyOut:
        return cls.model_validate({**asdict(made.key), "key": made.token})


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok"]
    database: Literal["sqlite", "postgresql"]
