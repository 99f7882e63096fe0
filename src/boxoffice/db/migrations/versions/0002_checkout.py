"""checkout: held and sold seats, holds, cancellations, customer caps, idempotency, audit trail

Existing data is carried over: every seat not remaining is sold, and the
audit trail starts with each section's creation and each stored booking, so
`boxoffice audit verify` passes on an upgraded database.

Downgrading forgets what the old schema cannot hold: active holds give their
seats back, cancelled bookings are deleted (their seats are free already), and
holds, caps, idempotency keys and the audit trail are dropped.

Revision ID: 0002_checkout
Revises: 0001_events_sections_bookings
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from boxoffice.db.types import UTCDateTime

revision: str = "0002_checkout"
down_revision: str | None = "0001_events_sections_bookings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Constraint names: the naming convention ("ck_<table>_<name>") applies to the names
# given here, so new CHECKs are given bare ("seats_add_up"); 0001 gave full names,
# which came out doubled ("ck_sections_ck_sections_…"), and are dropped as 0001 spelt them.
SEATS_ADD_UP = "remaining >= 0 AND held >= 0 AND sold >= 0 AND remaining + held + sold = capacity"


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("max_per_customer", sa.Integer(), nullable=True))
        batch.create_check_constraint(
            "max_per_customer_positive",
            "max_per_customer IS NULL OR max_per_customer >= 1",
        )

    with op.batch_alter_table("sections") as batch:
        batch.add_column(sa.Column("held", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("sold", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE sections SET sold = capacity - remaining")
    with op.batch_alter_table("sections") as batch:
        batch.drop_constraint("ck_sections_remaining_in_range", type_="check")
        batch.create_check_constraint("seats_add_up", SEATS_ADD_UP)

    op.create_table(
        "holds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("settled_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name="fk_holds_event_id_events"),
        sa.CheckConstraint(
            "status IN ('active', 'confirmed', 'released', 'expired')",
            name="status_known",
        ),
    )
    op.create_index(
        "ix_holds_event_id_customer_id_expires_at",
        "holds",
        ["event_id", "customer_id", "expires_at"],
    )
    op.create_table(
        "hold_items",
        sa.Column("hold_id", sa.Uuid(), nullable=False),
        sa.Column("section_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("hold_id", "section_id", name="pk_hold_items"),
        sa.ForeignKeyConstraint(["hold_id"], ["holds.id"], name="fk_hold_items_hold_id_holds"),
        sa.ForeignKeyConstraint(
            ["section_id", "event_id"],
            ["sections.id", "sections.event_id"],
            name="fk_hold_items_section_id_event_id_sections",
        ),
        sa.CheckConstraint("qty >= 1", name="qty_positive"),
    )
    op.create_index(
        "ix_hold_items_expiring",
        "hold_items",
        ["section_id", "expires_at"],
        postgresql_where=sa.text("active"),
        sqlite_where=sa.text("active"),
    )

    with op.batch_alter_table("bookings") as batch:
        batch.add_column(sa.Column("customer_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("hold_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("payment_reference", sa.String(255), nullable=True))
        batch.add_column(sa.Column("cancelled_at", UTCDateTime(), nullable=True))
        batch.create_foreign_key("fk_bookings_hold_id_holds", "holds", ["hold_id"], ["id"])
        batch.drop_constraint("ck_bookings_status_known", type_="check")
        batch.create_check_constraint("status_known", "status IN ('confirmed', 'cancelled')")
    op.create_index(
        "ix_bookings_customer_id_created_at_id", "bookings", ["customer_id", "created_at", "id"]
    )
    op.create_index("ix_bookings_hold_id", "bookings", ["hold_id"])

    op.create_table(
        "customer_tickets",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("tickets", sa.Integer(), nullable=False),
        sa.Column("max_tickets", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "customer_id", name="pk_customer_tickets"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_customer_tickets_event_id_events"
        ),
        sa.CheckConstraint("tickets >= 0 AND tickets <= max_tickets", name="within_limit"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "audit_records",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("section_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("hold_id", sa.Uuid(), nullable=True),
        sa.Column("booking_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_records"),
    )
    op.create_index("ix_audit_records_event_id_seq", "audit_records", ["event_id", "seq"])
    # The trail of what happened before it existed: each section's seats, then each booking.
    op.execute(
        "INSERT INTO audit_records (at, event_id, section_id, action, qty, outcome) "
        "SELECT e.created_at, s.event_id, s.id, 'create', s.capacity, 'ok' "
        "FROM sections s JOIN events e ON e.id = s.event_id ORDER BY e.created_at, s.position"
    )
    op.execute(
        "INSERT INTO audit_records (at, event_id, section_id, action, qty, outcome, booking_id) "
        "SELECT created_at, event_id, section_id, 'book', qty, 'ok', id "
        "FROM bookings ORDER BY created_at, id"
    )


def downgrade() -> None:
    op.drop_index("ix_audit_records_event_id_seq", table_name="audit_records")
    op.drop_table("audit_records")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("customer_tickets")
    op.execute("DELETE FROM bookings WHERE status = 'cancelled'")
    op.drop_index("ix_bookings_hold_id", table_name="bookings")
    op.drop_index("ix_bookings_customer_id_created_at_id", table_name="bookings")
    with op.batch_alter_table("bookings") as batch:
        batch.drop_constraint("status_known", type_="check")
        batch.create_check_constraint("ck_bookings_status_known", "status IN ('confirmed')")
        batch.drop_constraint("fk_bookings_hold_id_holds", type_="foreignkey")
        batch.drop_column("cancelled_at")
        batch.drop_column("payment_reference")
        batch.drop_column("hold_id")
        batch.drop_column("customer_id")
    op.drop_index("ix_hold_items_expiring", table_name="hold_items")
    op.drop_table("hold_items")
    op.drop_index("ix_holds_event_id_customer_id_expires_at", table_name="holds")
    op.drop_table("holds")
    with op.batch_alter_table("sections") as batch:
        batch.drop_constraint("seats_add_up", type_="check")
    op.execute("UPDATE sections SET remaining = remaining + held")
    with op.batch_alter_table("sections") as batch:
        batch.drop_column("version")
        batch.drop_column("sold")
        batch.drop_column("held")
        batch.create_check_constraint(
            "ck_sections_remaining_in_range", "remaining >= 0 AND remaining <= capacity"
        )
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("max_per_customer_positive", type_="check")
        batch.drop_column("max_per_customer")
