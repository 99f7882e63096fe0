"""A new database's sale tables are analyzed as soon as they have rows to plan by
(`db/young_tables.py`), not a minute later when autovacuum looks: until then PostgreSQL
planned a confirm's hold lookup by another index and read every hold of the event."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from boxoffice.booking import BatchedBooker
from boxoffice.db.database import Database
from boxoffice.db.young_tables import MIN_ROWS, SALE_TABLES, YoungTables, analyze_young_tables
from boxoffice.domain.commands import HoldItemRequest, PlaceHold
from boxoffice.domain.model import EventSpec, SectionSpec
from boxoffice.services.clock import FakeClock
from boxoffice.services.events import create_event

POSTGRESQL_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


async def _analyzed(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_force_next_flush()"))
        rows = await conn.execute(
            text(
                "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() "
                "AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)"
            )
        )
        return {str(name) for (name,) in rows}


async def _holds(database: Database, count: int) -> None:
    clock = FakeClock()
    event = await create_event(
        database, EventSpec("Big", (SectionSpec("A", 10, count + 10),)), clock()
    )
    booker = BatchedBooker(database, max_tickets_per_booking=10, clock=clock)
    await booker.start()
    try:
        section = event.sections[0].id
        await asyncio.gather(
            *(
                booker.submit(PlaceHold(event.id, (HoldItemRequest(section, 1),), 600))
                for _ in range(count)
            )
        )
    finally:
        await booker.stop()
    # This session's counts reach pg_stat_user_tables when it flushes them.
    async with database.write_engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_force_next_flush()"))


@POSTGRESQL_ONLY
async def test_tables_with_rows_enough_are_analyzed_and_the_others_wait(
    database: Database,
) -> None:
    assert not (set(SALE_TABLES) & await _analyzed(database)), "a new database is young"
    await _holds(database, MIN_ROWS + 20)
    deadline = time.monotonic() + 10
    analyzed: list[str] = []
    while "holds" not in analyzed:  # the statistics collector's counts arrive shortly
        assert time.monotonic() < deadline, "holds never analyzed"
        analyzed, left = await analyze_young_tables(database)
        await asyncio.sleep(0.2)
    assert {"holds", "hold_items", "audit_records"} <= set(analyzed) | await _analyzed(database)
    assert "bookings" not in await _analyzed(database), "a table without rows waits"
    assert left >= 1
    again, _ = await analyze_young_tables(database)
    assert "holds" not in again, "analyzed once, not at every look"


@POSTGRESQL_ONLY
async def test_the_process_stops_looking_once_every_table_is_analyzed(
    database: Database,
) -> None:
    async with database.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in SALE_TABLES:
            await conn.execute(text(f"ANALYZE {table}"))
    young = YoungTables(database, check_seconds=0.05)
    await young.start()
    task = young._task
    assert task is not None
    await asyncio.wait_for(task, 10)  # nothing left to look for: it ends by itself
    await young.stop()


async def test_sqlite_has_nothing_to_wait_for(database: Database) -> None:
    young = YoungTables(database)
    await young.start()
    if database.dialect == "sqlite":
        assert young._task is None
    await young.stop()
