"""audit trail by customer: who in an event's line has tried to buy already

Revision ID: 0008_audit_by_customer
Revises: 0007_waiting_room
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_audit_by_customer"
down_revision: str | None = "0007_waiting_room"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_audit_records_event_id_customer_id"
COLUMNS = ["event_id", "customer_id"]


def upgrade() -> None:
    # The admission loop counts the shoppers who have not tried to buy yet
    # (services/waiting_room.py): one lookup per admitted customer, every tick.
    # Every booking and refusal writes to this table: on PostgreSQL the index is built
    # without blocking those writes (CONCURRENTLY, which runs outside a transaction).
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(INDEX, "audit_records", COLUMNS, postgresql_concurrently=True)
    else:
        op.create_index(INDEX, "audit_records", COLUMNS)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="audit_records")
