"""events, sections and bookings, with the inventory CHECK constraints

Revision ID: 0001_events_sections_bookings
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from boxoffice.db.types import UTCDateTime

revision: str = "0001_events_sections_bookings"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_created_at_id", "events", ["created_at", "id"])

    op.create_table(
        "sections",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sections"),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name="fk_sections_event_id_events"),
        sa.CheckConstraint("capacity >= 1", name="ck_sections_capacity_positive"),
        sa.CheckConstraint("price_cents >= 0", name="ck_sections_price_not_negative"),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= capacity", name="ck_sections_remaining_in_range"
        ),
        sa.UniqueConstraint("event_id", "name", name="uq_sections_event_id_name"),
        sa.UniqueConstraint("event_id", "position", name="uq_sections_event_id_position"),
        sa.UniqueConstraint("id", "event_id", name="uq_sections_id_event_id"),
    )

    op.create_table(
        "bookings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("section_id", sa.Uuid(), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("total_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bookings"),
        sa.ForeignKeyConstraint(
            ["section_id", "event_id"],
            ["sections.id", "sections.event_id"],
            name="fk_bookings_section_id_event_id_sections",
        ),
        sa.CheckConstraint("qty >= 1", name="ck_bookings_qty_positive"),
        sa.CheckConstraint(
            "total_price_cents = unit_price_cents * qty", name="ck_bookings_total_is_unit_times_qty"
        ),
        sa.CheckConstraint("status IN ('confirmed')", name="ck_bookings_status_known"),
    )
    op.create_index("ix_bookings_created_at_id", "bookings", ["created_at", "id"])
    op.create_index(
        "ix_bookings_event_id_created_at_id", "bookings", ["event_id", "created_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_bookings_event_id_created_at_id", table_name="bookings")
    op.drop_index("ix_bookings_created_at_id", table_name="bookings")
    op.drop_table("bookings")
    op.drop_table("sections")
    op.drop_index("ix_events_created_at_id", table_name="events")
    op.drop_table("events")
