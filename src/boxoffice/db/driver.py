"""One hot statement run on asyncpg itself, past SQLAlchemy's execution layer.

SQLAlchemy still owns everything around it: the engine, the pool, the
connection's life and its invalidation after a failure. Only the execution of
a statement that runs thousands of times a second skips SQLAlchemy's
per-execution work (execution context, parameter processing, the greenlet hop,
result metadata and rows): 240 against 110 µs of CPU per execution of a
25-row batch statement, measured side by side (docs/performance.md). The
statement is still written as a SQLAlchemy `text()` and compiled by
SQLAlchemy's asyncpg dialect, once, into asyncpg's `$n` form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import TextClause
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection


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
        with SQLAlchemy on an AUTOCOMMIT connection. asyncpg caches the prepared
        statement per connection.
        """
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        rows: list[Any] = await driver.fetch(self.sql, *[params[name] for name in self.names])
        return rows
