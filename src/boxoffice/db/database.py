"""The engine for each supported database, tuned so that concurrent writers stay correct.

SQLite: WAL journal (readers never block the writer), a busy timeout (other
processes' writers are waited for, not reported as "database is locked"), and
`BEGIN IMMEDIATE` for write transactions, so the write lock is taken up front
instead of at the first UPDATE, where SQLite could only fail, not wait. Inside
one process, writers queue on an asyncio lock first, which is fairer and cheaper
than SQLite's sleeping busy handler.

PostgreSQL: asyncpg, READ COMMITTED; the booking statement is a conditional
UPDATE, which PostgreSQL re-checks against the latest row version after waiting
for a concurrent writer.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from boxoffice.config import Settings

Dialect = Literal["sqlite", "postgresql"]

BEGIN_MODE_OPTION = "boxoffice_sqlite_begin"


class Database:
    """An engine plus what its dialect needs to run transactions safely."""

    def __init__(self, engine: AsyncEngine, dialect: Dialect) -> None:
        self.engine = engine
        self.dialect: Dialect = dialect
        # Only SQLite needs it: one writer at a time per file.
        self.write_lock: asyncio.Lock | None = asyncio.Lock() if dialect == "sqlite" else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls.from_url(
            settings.async_url,
            pool_size=settings.db_pool_size,
            timeout_seconds=settings.db_timeout_seconds,
        )

    @classmethod
    def from_url(cls, url: URL, *, pool_size: int = 10, timeout_seconds: float = 10.0) -> Database:
        if url.get_backend_name() == "sqlite":
            return cls(_sqlite_engine(url, pool_size, timeout_seconds), "sqlite")
        return cls(_postgresql_engine(url, pool_size, timeout_seconds), "postgresql")

    async def connect(self, *, write: bool) -> AsyncConnection:
        """A pooled connection whose next `begin()` starts the right kind of transaction."""
        conn = await self.engine.connect()
        if self.dialect == "sqlite":
            await conn.execution_options(
                **{BEGIN_MODE_OPTION: "IMMEDIATE" if write else "DEFERRED"}
            )
        return conn

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_engine(url: URL, pool_size: int, timeout_seconds: float) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=timeout_seconds,
        connect_args={"timeout": timeout_seconds, "check_same_thread": False},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's own BEGIN is always DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout_seconds * 1000)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(BEGIN_MODE_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _postgresql_engine(url: URL, pool_size: int, timeout_seconds: float) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeout_seconds,
        pool_pre_ping=True,
        connect_args={
            "timeout": timeout_seconds,
            "command_timeout": max(timeout_seconds, 30.0),
            "server_settings": {"application_name": "boxoffice"},
        },
    )
