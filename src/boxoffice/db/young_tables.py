"""Statistics for a new database: the sale's tables analyzed as soon as they have rows.

PostgreSQL plans a never-analyzed table by default selectivities. The batch's write then
looked a confirmed hold up by the `(event_id, customer_id, expires_at)` index instead of
its primary key, reading every hold of the event per confirm: 9.0 ms a batch instead of
3.7 (docs/performance.md). Migration 0009 has autovacuum analyze these tables after 500
rows, but autovacuum looks once a minute (`autovacuum_naptime`), so the first minute of
a new deployment's first sale was planned blind.

So each process looks every few seconds (a read of `pg_stat_user_tables`) while any of
them has never been analyzed, and analyzes those that have rows enough to plan by; once
every one has been, it stops looking. Several processes may analyze one table at once:
PostgreSQL lets one do it at a time, and the other's is a few milliseconds more. A role
that does not own the tables gets a warning from ANALYZE, not an error. PostgreSQL only:
SQLite's planner has no such statistics to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy import bindparam, text

from boxoffice.db.database import Database

log = structlog.get_logger("boxoffice.db")

# The tables a sale grows from nothing, and what migration 0009 tunes.
SALE_TABLES = (
    "holds",
    "hold_items",
    "bookings",
    "audit_records",
    "idempotency_keys",
    "queue_places",
)
MIN_ROWS = 500  # 0009's autovacuum_analyze_threshold
CHECK_SECONDS = 5.0

_NEVER_ANALYZED = text(
    "SELECT relname, n_live_tup + n_mod_since_analyze >= :rows AS ready "
    "FROM pg_stat_user_tables "
    "WHERE schemaname = current_schema() AND relname IN :tables "
    "AND last_analyze IS NULL AND last_autoanalyze IS NULL"
).bindparams(bindparam("tables", expanding=True))


async def analyze_young_tables(database: Database) -> tuple[list[str], int]:
    """One look: the tables analyzed now, and how many are still never analyzed."""
    async with database.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")  # ANALYZE takes no BEGIN
        found = (
            await conn.execute(_NEVER_ANALYZED, {"rows": MIN_ROWS, "tables": list(SALE_TABLES)})
        ).all()
        analyzed = [str(name) for name, ready in found if ready]
        for table in analyzed:  # names from our own list, never from a request
            await conn.execute(text(f"ANALYZE {table}"))
    if analyzed:
        log.info("young_tables_analyzed", tables=analyzed)
    return analyzed, len(found) - len(analyzed)


class YoungTables:
    """Looks every CHECK_SECONDS until every sale table has been analyzed once."""

    def __init__(self, database: Database, *, check_seconds: float = CHECK_SECONDS) -> None:
        self._database = database
        self._check_seconds = check_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._database.dialect == "postgresql" and self._task is None:
            self._task = asyncio.create_task(self._run(), name="boxoffice-young-tables")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                _, left = await analyze_young_tables(self._database)
            except Exception as error:  # an outage: the next look tries again
                log.warning("young_tables_look_failed", error=repr(error))
            else:
                if not left:
                    return
            await asyncio.sleep(self._check_seconds)
