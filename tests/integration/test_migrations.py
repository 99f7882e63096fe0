"""Migrations: reversible, idempotent, and identical to the tables the code declares."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from boxoffice.config import async_database_url
from boxoffice.db.database import Database
from boxoffice.db.migrate import current_revision, downgrade, head_revision, upgrade
from boxoffice.db.tables import metadata


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_schema_is_at_head_and_matches_the_declared_tables(database: Database) -> None:
    assert await current_revision(database) == head_revision()
    async with database.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_downgrade_and_upgrade_round_trip(database_url: str) -> None:
    await asyncio.to_thread(downgrade, database_url, "base")
    database = Database.from_url(async_database_url(database_url))
    try:
        async with database.engine.connect() as conn:
            assert {"events", "sections", "bookings"}.isdisjoint(await conn.run_sync(_tables))
        await asyncio.to_thread(upgrade, database_url)
        await asyncio.to_thread(upgrade, database_url)  # a second run is a no-op
        assert await current_revision(database) == head_revision()
        async with database.engine.connect() as conn:
            assert {"events", "sections", "bookings"} <= await conn.run_sync(_tables)
    finally:
        await database.dispose()
