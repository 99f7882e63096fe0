"""Alembic environment: runs the migrations on the async engine Boxoffice uses."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from boxoffice.config import async_database_url, get_settings
from boxoffice.db.database import Database, Limits
from boxoffice.db.tables import metadata

config = context.config


def _url() -> str:
    configured = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return str(configured or get_settings().database_url)


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # SQLite rebuilds a table to change its constraints (Alembic's batch mode): with
        # foreign keys enforced, dropping the old copy of a referenced table would fail.
        # Off for the migration (outside any transaction, or SQLite ignores it), and
        # every reference checked before the end.
        _pragma(connection, "PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
    if sqlite:
        _pragma(connection, "PRAGMA foreign_keys=ON")


def _pragma(connection: Connection, statement: str) -> None:
    """Run `statement` on the driver's connection, past SQLAlchemy's automatic BEGIN."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


# Schema changes may rewrite big tables: no statement timeout to speak of, but a lock
# waited for no longer than 30 s, so a migration never queues the whole sale behind it.
MIGRATION_LIMITS = Limits(pool_size=4, statement_timeout=24 * 3600.0, lock_timeout=30.0)


async def _run_online() -> None:
    database = Database.from_url(
        async_database_url(_url()),
        limits=MIGRATION_LIMITS,
        pooler=config.attributes.get("db_pooler", "none"),
    )
    try:
        async with database.engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await database.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
