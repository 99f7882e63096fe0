"""fraud flags: suspicious patterns noticed, for a person to look at

Revision ID: 0005_fraud_flags
Revises: 0004_hold_caps
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from boxoffice.db.types import UTCDateTime

revision: str = "0005_fraud_flags"
down_revision: str | None = "0004_hold_caps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fraud_flags",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("key_id", sa.String(16), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_fraud_flags"),
    )
    op.create_index("ix_fraud_flags_event_id_seq", "fraud_flags", ["event_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_fraud_flags_event_id_seq", table_name="fraud_flags")
    op.drop_table("fraud_flags")
