"""access control: API keys with roles, and the organizer that owns each event

Events made before keys existed belong to no organizer: admins manage them.

Revision ID: 0003_access_control
Revises: 0002_checkout
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from boxoffice.db.types import UTCDateTime

revision: str = "0003_access_control"
down_revision: str | None = "0002_checkout"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("organizer_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.CheckConstraint("role IN ('admin', 'organizer', 'customer')", name="role_known"),
        sa.CheckConstraint(
            "(role = 'customer') = (customer_id IS NOT NULL)",
            name="customer_keys_name_a_customer",
        ),
        sa.CheckConstraint(
            "(role = 'organizer') = (organizer_id IS NOT NULL)",
            name="organizer_keys_name_one",
        ),
    )
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("organizer_id", sa.String(64), nullable=True))
    op.create_index("ix_events_organizer_id", "events", ["organizer_id"])


def downgrade() -> None:
    op.drop_index("ix_events_organizer_id", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("organizer_id")
    op.drop_table("api_keys")
