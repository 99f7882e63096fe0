"""One hot statement run on asyncpg itself, past SQLAlchemy's execution layer.

SQLAlchemy still owns everything around it: the engine, the pool, the
connection's life and its invalidation after a failure. Only the execution of
a statement that runs thousands of times a second skips SQLAlchemy's
per-execution work (execution context, parameter processing, the greenlet hop,
result metadata and rows): 240 against 110 µs of CPU per execution of a
25-row batch statement, measured side by side (docs/performance.md). The
statement is still written as a SQLAlchemy `text()` and compiled by
SQLAlchemy's asyncpg dialect, once, into asyncpg's `$n` form.

Behind a transaction pooler (`DB_POOLER=transaction`) a statement run outside
a transaction gets an explicit one, whose BEGIN carries the session settings
(see `db/database.py`): without it, the statement would run with whatever the
server session it lands on was started with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import TextClause
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.db.database import SettingsPerTransaction


class DriverStatement:
    """`statement`, compiled once for asyncpg, run on a connection's asyncpg connection."""

    def __init__(self, statement: TextClause) -> None:
        dialect = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.names: Sequence[str] = tuple(compiled.positiontup or ())

    async def fetch(self, conn: AsyncConnection, params: Mapping[str, Any]) -> list[Any]:
        """The rows (asyncpg `Record`s) of one execution; asyncpg's errors pass unchanged.

        Outside an explicit transaction the statement is its own transaction, as
        with SQLAlchemy on an AUTOCOMMIT connection (behind a transaction pooler, in
        a transaction of its own). asyncpg caches the prepared statement per
        connection; behind a pooler the statement is unnamed, parsed again with
        each execution, and the connection keeps only its description.
        """
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        args = [params[name] for name in self.names]
        if not isinstance(driver, SettingsPerTransaction):
            rows: list[Any] = await driver.fetch(self.sql, *args)
            return rows
        # Described once per connection, so each execution is one round trip, not two.
        unnamed = raw.info.get(self)
        if unnamed is None:
            unnamed = raw.info[self] = await driver.prepare(self.sql)
        if driver.is_in_transaction():
            rows = await unnamed.fetch(*args)
            return rows
        async with driver.transaction():
            rows = await unnamed.fetch(*args)
        return rows
