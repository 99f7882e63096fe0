"""hold caps: a customer's holds, by expiry, one index range away

Counting a customer's active holds, and those it gave up in the last hour,
reads `holds` by customer and expiry (every such hold expires after the hour
began: a released one was released before its expiry).

Revision ID: 0004_hold_caps
Revises: 0003_access_control
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_hold_caps"
down_revision: str | None = "0003_access_control"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_holds_customer_id_expires_at", "holds", ["customer_id", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_holds_customer_id_expires_at", table_name="holds")
