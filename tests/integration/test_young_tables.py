"""A new database's sale tables are analyzed as soon as they have rows to plan by
(`db/young_tables.py`), not a minute later when autovacuum looks: until then PostgreSQL
planned a confirm's hold lookup by another index and read every hold of the event."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from boxoffice.api.app import create_app
from boxoffice.booking import BatchedBooker
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.db.young_tables import MIN_ROWS, SALE_TABLES, YoungTables
from boxoffice.domain.commands import HoldItemRequest, PlaceHold
from boxoffice.domain.model import EventSpec, SectionSpec
from boxoffice.services.clock import FakeClock
from boxoffice.services.events import create_event

POSTGRESQL_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def _with_statistics(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = current_schema()")
        )
        return {str(name) for (name,) in rows}


async def _no_autovacuum(database: Database) -> None:
    """This test's analyzes are ours alone: autovacuum must not get there first."""
    async with database.write_engine.connect() as conn:
        for table in SALE_TABLES:
            await conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = off)"))
        await conn.commit()


async def _hold(database: Database, count: int) -> None:
    """`count` holds (and as many items and audit records), their counts reported."""
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
    # A backend reports its counts when it ends: end the writers' connections.
    await database.write_engine.dispose()


async def _look_until(young: YoungTables, table: str) -> list[str]:
    """Looks until `table` is analyzed (the counts reach the catalog shortly after)."""
    deadline = time.monotonic() + 15
    while True:
        analyzed, _ = await young.look()
        if table in analyzed:
            return analyzed
        assert time.monotonic() < deadline, f"{table} never analyzed"
        await asyncio.sleep(0.2)


@POSTGRESQL_ONLY
async def test_tables_are_analyzed_once_they_have_rows_enough(database: Database) -> None:
    await _no_autovacuum(database)
    young = YoungTables(database)
    analyzed, left = await young.look()
    assert (analyzed, left) == ([], len(SALE_TABLES)), "a new database: every table young"
    await _hold(database, MIN_ROWS * 3 // 5)  # 300 rows: not enough yet
    await asyncio.sleep(1.0)
    analyzed, left = await young.look()
    assert analyzed == []
    assert left == len(SALE_TABLES)
    await _hold(database, MIN_ROWS * 2 // 5 + 10)  # 510 in all
    analyzed = await _look_until(young, "holds")
    assert {"holds", "hold_items", "audit_records"} <= set(analyzed) | await _with_statistics(
        database
    )
    assert "bookings" not in await _with_statistics(database), "a table without rows waits"
    again, left = await young.look()
    assert "holds" not in again, "analyzed once, not at every look"
    assert left >= 1  # bookings, idempotency keys, queue places


@POSTGRESQL_ONLY
async def test_the_process_stops_looking_once_its_tables_have_statistics(
    database: Database,
) -> None:
    young = YoungTables(database, check_seconds=0.05, tables=("holds",))
    assert await young.look() == ([], 1)
    await _hold(database, 5)
    async with database.write_engine.connect() as conn:
        await conn.execute(text("ANALYZE holds"))  # as autovacuum or an operator would
        await conn.commit()
    await young.start()
    assert young.looking
    for _ in range(200):  # nothing left to look for: it ends by itself
        if not young.looking:
            break
        await asyncio.sleep(0.05)
    assert not young.looking
    await young.stop()


@POSTGRESQL_ONLY
async def test_the_server_looks_from_its_start(settings: Settings, database: Database) -> None:
    app = create_app(settings, database)
    async with app.router.lifespan_context(app):
        assert app.state.young_tables.looking


@SQLITE_ONLY
async def test_sqlite_has_nothing_to_wait_for(database: Database) -> None:
    young = YoungTables(database)
    await young.start()
    assert not young.looking
    await young.stop()


def test_the_tables_and_threshold_are_migration_0009s() -> None:
    """Migrations are frozen history, so the list is written twice on purpose: once in
    0009 (what autovacuum is told), once here (what a process looks at). They agree."""
    import importlib.util
    from pathlib import Path

    import boxoffice.db.migrations as migrations

    path = Path(migrations.__file__).parent / "versions" / "0009_sale_tables_analyzed_early.py"
    spec = importlib.util.spec_from_file_location("migration_0009", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert set(migration.TABLES) == set(SALE_TABLES)
    assert f"autovacuum_analyze_threshold = {MIN_ROWS}," in migration.SETTINGS


@POSTGRESQL_ONLY
async def test_a_missing_table_is_warned_of_once_and_the_others_still_looked_at(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import structlog

    from boxoffice.db import young_tables

    with structlog.testing.capture_logs() as logs:
        # A logger of the test's own: loggers are cached on first use.
        monkeypatch.setattr(young_tables, "log", structlog.get_logger("boxoffice.db"))
        young = YoungTables(database, tables=("holds", "no_such_table"))
        assert await young.look() == ([], 1)  # holds: found, young, too few rows
        assert await young.look() == ([], 1)
    missing = [entry for entry in logs if entry["event"] == "young_tables_not_found"]
    assert len(missing) == 1
    assert (missing[0]["found"], missing[0]["wanted"]) == (1, 2)
