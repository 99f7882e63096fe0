"""waiting room: rooms, places in line, admission steps, and the service's own secrets

Revision ID: 0007_waiting_room
Revises: 0006_event_in_every_key
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from boxoffice.db.types import UTCDateTime

revision: str = "0007_waiting_room"
down_revision: str | None = "0006_event_in_every_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "waiting_rooms",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("prequeue_opens_at", UTCDateTime(), nullable=True),
        sa.Column("opens_at", UTCDateTime(), nullable=True),
        sa.Column("new_users_per_minute", sa.Integer(), nullable=False),
        sa.Column("total_active_users", sa.Integer(), nullable=False),
        sa.Column("session_duration_seconds", sa.Integer(), nullable=False),
        sa.Column("queueing_method", sa.String(16), nullable=False),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("line_epoch", UTCDateTime(), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=True),
        sa.Column("figures_at", UTCDateTime(), nullable=True),
        sa.Column("lease_holder", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "queueing_method IN ('fifo', 'random', 'passthrough', 'reject')",
            name="ck_waiting_rooms_method_known",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_waiting_rooms_event_id_events"
        ),
        sa.PrimaryKeyConstraint("event_id", name="pk_waiting_rooms"),
    )
    op.create_table(
        "queue_places",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("order_key", sa.BigInteger(), nullable=False),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("order_key >= 0", name="ck_queue_places_order_key_not_negative"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_queue_places_event_id_events"
        ),
        sa.PrimaryKeyConstraint("event_id", "customer_id", name="pk_queue_places"),
    )
    op.create_index("ix_queue_places_event_id_order_key", "queue_places", ["event_id", "order_key"])
    op.create_table(
        "admission_steps",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("order_key", sa.BigInteger(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("admitted", sa.Integer(), nullable=False),
        sa.CheckConstraint("admitted >= 0", name="ck_admission_steps_admitted_not_negative"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_admission_steps_event_id_events"
        ),
        sa.PrimaryKeyConstraint("event_id", "order_key", name="pk_admission_steps"),
    )
    op.create_table(
        "service_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_service_secrets"),
    )


def downgrade() -> None:
    op.drop_table("service_secrets")
    op.drop_table("admission_steps")
    op.drop_index("ix_queue_places_event_id_order_key", table_name="queue_places")
    op.drop_table("queue_places")
    op.drop_table("waiting_rooms")
