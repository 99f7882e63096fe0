"""Hot statements run on the driver itself, past SQLAlchemy's execution layer.

SQLAlchemy still owns everything around them: the engine, the pool, the
connection's life, its transactions and its invalidation after a failure.
Only the execution of a statement that runs thousands of times a second
skips SQLAlchemy's per-execution work (execution context, parameter
processing, the greenlet hop, result metadata and rows). Each statement is
still written with SQLAlchemy and compiled by its dialect, once. Measured side
by side (docs/performance.md):

- `DriverStatement` (asyncpg): 240 against 110 µs of CPU per execution of a
  25-row batch statement;
- `SqliteStatement` (sqlite3, on SQLite's writer): a checkout batch's writes went from
  572 to 507 thousand instructions per command (callgrind, the same 100 jobs
  replayed on a copy of their database).

`SqliteStatement` binds every value through its column type's own bind
processor, so what it stores is exactly what SQLAlchemy would store; a
parameter without a type is refused when the statement is made.

Behind a transaction pooler (`DB_POOLER=transaction`) a statement run outside
a transaction gets an explicit one, whose BEGIN carries the session settings
(see `db/database.py`): without it, the statement would run with whatever the
server session it lands on was started with.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, TextClause
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.dialects.sqlite import pysqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import NullType

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


_PYSQLITE = pysqlite.dialect()


class SqliteStatement:
    """`statement`, compiled once for pysqlite, run on a connection's sqlite3 connection.

    It runs inside the transaction SQLAlchemy began on that connection (the
    writer's BEGIN IMMEDIATE, `services/unit_of_work.py`). sqlite3's errors
    leave wrapped as SQLAlchemy wraps them (`IntegrityError`, `OperationalError`
    with the driver's error as `orig`), so `db/errors.py` reads them as before.
    """

    def __init__(self, statement: ClauseElement, *, column_keys: Sequence[str] = ()) -> None:
        compiled = cast(
            SQLCompiler,
            statement.compile(dialect=_PYSQLITE, column_keys=list(column_keys) or None),
        )
        self.sql = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        converters: list[Callable[[Any], Any] | None] = []
        # Values written into the statement itself (`.values(active=False)`, `version + 1`).
        self._fixed: dict[str, Any] = {}
        for name in self.names:
            bind = compiled.binds[name]
            if isinstance(bind.type, NullType):
                raise TypeError(f"parameter {name!r} of {self.sql!r} needs a type")
            converters.append(bind.type.dialect_impl(_PYSQLITE).bind_processor(_PYSQLITE))
            if not bind.required:
                self._fixed[name] = bind.effective_value
        self._converting = tuple(
            (at, convert) for at, convert in enumerate(converters) if convert is not None
        )

    def _values(self, row: Mapping[str, Any]) -> list[Any]:
        if self._fixed:
            row = {**self._fixed, **row}
        values = [row[name] for name in self.names]
        for at, convert in self._converting:
            values[at] = convert(values[at])
        return values

    def run_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> int:
        """Run it once per row, in `conn`'s transaction; the number of rows it changed."""
        driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        try:
            return driver.executemany(self.sql, [self._values(row) for row in rows]).rowcount
        except sqlite3.Error as error:
            raise _wrapped(self.sql, error) from error

    def fetch(self, conn: Connection, row: Mapping[str, Any]) -> list[Any]:
        """Its rows as sqlite3 gives them (stored values, no result processing)."""
        driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        try:
            return driver.execute(self.sql, self._values(row)).fetchall()
        except sqlite3.Error as error:
            raise _wrapped(self.sql, error) from error


def _wrapped(sql: str, error: sqlite3.Error) -> sa_exc.StatementError:
    """The error as SQLAlchemy's execution layer would have raised it."""
    return sa_exc.DBAPIError.instance(sql, None, error, sqlite3.Error)
