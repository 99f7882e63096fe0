"""The schema, with the inventory rule written as CHECK constraints.

Whatever the code does, the database refuses a section whose `remaining`
leaves `[0, capacity]`, a booking whose total is not `unit price × qty`, and a
booking for a section of another event (composite foreign key).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    Uuid,
)

from boxoffice.db.types import UTCDateTime
from boxoffice.domain.model import MAX_NAME_LENGTH

# Stable constraint names, so migrations can refer to them on every database.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

events = Table(
    "events",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("name", String(MAX_NAME_LENGTH), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "created_at", "id"),
)

sections = Table(
    "sections",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("event_id", Uuid(), ForeignKey("events.id"), nullable=False),
    Column("position", Integer(), nullable=False),
    Column("name", String(MAX_NAME_LENGTH), nullable=False),
    Column("price_cents", BigInteger(), nullable=False),
    Column("capacity", Integer(), nullable=False),
    Column("remaining", Integer(), nullable=False),
    CheckConstraint("capacity >= 1", name="capacity_positive"),
    CheckConstraint("price_cents >= 0", name="price_not_negative"),
    CheckConstraint("remaining >= 0 AND remaining <= capacity", name="remaining_in_range"),
    UniqueConstraint("event_id", "name"),
    UniqueConstraint("event_id", "position"),
    UniqueConstraint("id", "event_id"),
)

bookings = Table(
    "bookings",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("event_id", Uuid(), nullable=False),
    Column("section_id", Uuid(), nullable=False),
    Column("qty", Integer(), nullable=False),
    Column("unit_price_cents", BigInteger(), nullable=False),
    Column("total_price_cents", BigInteger(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint("qty >= 1", name="qty_positive"),
    CheckConstraint("total_price_cents = unit_price_cents * qty", name="total_is_unit_times_qty"),
    CheckConstraint("status IN ('confirmed')", name="status_known"),
    ForeignKeyConstraint(["section_id", "event_id"], ["sections.id", "sections.event_id"]),
    Index(None, "created_at", "id"),
    Index(None, "event_id", "created_at", "id"),
)
