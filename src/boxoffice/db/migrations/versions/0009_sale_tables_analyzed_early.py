"""the tables a sale grows are analyzed early: plans by statistics, not by defaults

Revision ID: 0009_sale_tables_analyzed_early
Revises: 0008_audit_by_customer
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_sale_tables_analyzed_early"
down_revision: str | None = "0008_audit_by_customer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tables a sale fills from nothing, in minutes.
TABLES = ("holds", "hold_items", "bookings", "audit_records", "idempotency_keys", "queue_places")
# Autovacuum's defaults analyze a table once 50 rows + 10 % of it have changed.
SETTINGS = "autovacuum_analyze_threshold = 500, autovacuum_analyze_scale_factor = 0.02"


def upgrade() -> None:
    # Never analyzed, a table is planned by default selectivities, and the batch's write
    # looked a confirmed hold up by the (event_id, customer_id, expires_at) index instead
    # of its primary key: every hold of the event read, per confirm (9 ms a batch instead
    # of 4, docs/performance.md). Analyzed, the primary key is the plan. PostgreSQL only:
    # SQLite's planner has no such statistics to wait for.
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET ({SETTINGS})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} RESET (autovacuum_analyze_threshold, "
            "autovacuum_analyze_scale_factor)"
        )
