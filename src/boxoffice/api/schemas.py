"""Request and response bodies, in the original API's camelCase.

Requests are strict: unknown fields are refused (nobody can slip `remaining`
or `price` into a booking), integers must be JSON integers, and names are
trimmed. Money is a JSON number with at most two decimals; inside it is exact
(integer cents), and it is rendered from cents, so `totalPrice` is exactly
`unitPrice × qty`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from boxoffice.domain.model import (
    MAX_CAPACITY,
    MAX_NAME_LENGTH,
    MAX_SECTIONS_PER_EVENT,
    Booking,
    Event,
    Section,
)
from boxoffice.domain.money import from_cents

ID_MAX_LENGTH = 64


def _money_json(value: Decimal) -> int | float:
    # Amounts are below 2**53 cents, so the shortest float repr is the exact decimal.
    return int(value) if value == value.to_integral_value() else float(value)


Money = Annotated[
    Decimal,
    PlainSerializer(_money_json, return_type=Any, when_used="json"),
    WithJsonSchema({"type": "number", "examples": [49.99]}),
]
Name = Annotated[
    str,
    StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH),
]
Id = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=ID_MAX_LENGTH)]


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


class BookIn(_Request):
    event_id: Id
    section_id: Id
    qty: Annotated[
        StrictInt,
        Field(
            ge=1,
            le=1000,
            description="Seats to book; at most MAX_TICKETS_PER_BOOKING (default 10).",
        ),
    ]


class SectionOut(_Response):
    id: str
    name: str
    price: Money
    capacity: int
    remaining: int

    @classmethod
    def of(cls, section: Section) -> SectionOut:
        return cls(
            id=section.id,
            name=section.name,
            price=from_cents(section.price_cents),
            capacity=section.capacity,
            remaining=section.remaining,
        )


class EventOut(_Response):
    id: str
    name: str
    created_at: datetime
    sections: list[SectionOut]

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(
            id=event.id,
            name=event.name,
            created_at=event.created_at,
            sections=[SectionOut.of(section) for section in event.sections],
        )


class BookingOut(_Response):
    id: str
    event_id: str
    section_id: str
    qty: int
    unit_price: Money
    total_price: Money
    status: Literal["confirmed"]
    created_at: datetime

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
        )


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
    requested: int | None = Field(None, description="Seats asked for (insufficient_seats).")

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok"]
    database: Literal["sqlite", "postgresql"]
