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
- `SqliteStatement` (sqlite3, on SQLite's writer): the writer's instructions per
  command of a checkout went from 572 to 451 thousand (-21 %; callgrind, the
  same 100 jobs replayed on a copy of their database).

`SqliteStatement` binds every value through its column type's own bind
processor, so what it stores is exactly what SQLAlchemy would store; a
parameter without a type is refused when the statement is made.

Behind a transaction pooler (`DB_POOLER=transaction`) a statement run outside
a transaction gets an explicit one, whose BEGIN carries the session settings
(see `db/database.py`): without it, the statement would run with whatever the
server session it lands on was started with.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Select, TextClause
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.dialects.sqlite import pysqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import NullType

from boxoffice.db.database import SettingsPerTransaction

T = TypeVar("T")


def in_list(values: Iterable[T]) -> list[T]:
    """`values` for an expanding IN list, padded to a power of two by repeating the last.

    Each length of an IN list is a statement of its own, which asyncpg (through
    SQLAlchemy) prepares before its first execution on a connection: a round trip
    more, and one more statement in the connection's cache of 100, evicting another.
    Coalesced reads come in every length from 1 to 500; padded, they come in ten
    (in a small sale 13 % of the key reads had paid for a prepare, docs/performance.md).
    A value named twice in an IN list finds its rows once.
    """
    listed = list(values)
    if len(listed) < 2:
        return listed
    return listed + [listed[-1]] * ((1 << (len(listed) - 1).bit_length()) - len(listed))


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
MAX_SHAPES = 256  # expanded texts kept per statement (one per combination of list lengths)


class SqliteStatement:
    """`statement`, compiled once for pysqlite, run on a connection's sqlite3 connection.

    It runs inside the transaction SQLAlchemy began on that connection (the
    writer's BEGIN IMMEDIATE, `services/unit_of_work.py`). sqlite3's errors
    leave wrapped as SQLAlchemy wraps them (`IntegrityError`, `OperationalError`
    with the driver's error as `orig`), so `db/errors.py` reads them as before.
    A connection that is not sqlite3's (PostgreSQL's, or aiosqlite's through
    `run_sync`) runs `statement` through SQLAlchemy as usual.

    A list parameter (`bindparam(..., expanding=True)`) is expanded once per
    length seen. A SELECT's rows come back as named tuples, each value through
    its column type's result processor, as SQLAlchemy's own rows would hold them;
    any other statement that returns rows (a UNION, `text()`, RETURNING) is
    refused. An INSERT made with `column_keys` binds every one of them: each row
    gives each (a key left out fails loudly, where SQLAlchemy would have left
    the column to its default). One type per parameter name: a name used twice
    takes its first use's type.
    """

    def __init__(self, statement: ClauseElement, *, column_keys: Sequence[str] = ()) -> None:
        self.statement = cast(Executable, statement)
        self._compiled = cast(
            SQLCompiler,
            statement.compile(dialect=_PYSQLITE, column_keys=list(column_keys) or None),
        )
        binds = self._compiled.binds
        for name, bind in binds.items():
            if isinstance(bind.type, NullType):
                raise TypeError(f"parameter {name!r} of {self._compiled.string!r} needs a type")
        # Values written into the statement itself (`.values(active=False)`, `version + 1`).
        self._fixed = {
            name: bind.effective_value for name, bind in binds.items() if not bind.required
        }
        self._lists = tuple(sorted(name for name, bind in binds.items() if bind.expanding))
        self._shapes: dict[tuple[int, ...], _Shape] = {}
        if not isinstance(statement, Select) and (
            isinstance(statement, TextClause) or bool(getattr(statement, "exported_columns", None))
        ):
            # Its rows would come back as stored (hex ids, text timestamps), unconverted.
            raise TypeError("only a plain SELECT's rows are read; this statement returns rows")
        self._rows = _RowShape.of(statement)

    def _shape(self, params: Mapping[str, Any]) -> _Shape:
        lengths = tuple(len(params[name]) for name in self._lists)
        shape = self._shapes.get(lengths)
        if shape is None:
            if len(self._shapes) >= MAX_SHAPES:  # bounded: a few lengths are the common ones
                self._shapes.clear()
            shape = self._shapes[lengths] = _Shape.of(self._compiled, self._lists, lengths)
        return shape

    def _values(self, shape: _Shape, row: Mapping[str, Any]) -> list[Any]:
        if self._fixed:
            row = {**self._fixed, **row}
        values = [row[name] if at is None else row[name][at] for name, at in shape.places]
        for place, convert in shape.converting:
            values[place] = convert(values[place])
        return values

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run it once per row, in `conn`'s transaction; the number of rows it changed."""
        driver = conn.connection.driver_connection
        if not isinstance(driver, sqlite3.Connection):
            changed: int = conn.execute(self.statement, list(rows)).rowcount
            return changed
        if self._lists:
            raise TypeError("a statement with list parameters runs once (execute), not per row")
        _in_transaction(conn)
        shape = self._shape({})
        try:
            return driver.executemany(
                shape.sql, [self._values(shape, row) for row in rows]
            ).rowcount
        except sqlite3.Error as error:
            raise _wrapped(conn, shape.sql, error) from error

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Sequence[Any]:
        """Its rows (SELECT), each with its columns as attributes."""
        driver = conn.connection.driver_connection
        if not isinstance(driver, sqlite3.Connection):
            return list(conn.execute(self.statement, params))
        _in_transaction(conn)
        shape = self._shape(params)
        try:
            fetched = driver.execute(shape.sql, self._values(shape, params)).fetchall()
        except sqlite3.Error as error:
            raise _wrapped(conn, shape.sql, error) from error
        return fetched if self._rows is None else self._rows.rows(fetched)


class _Shape:
    """The statement with its lists expanded to given lengths: its text, and where each
    `?` takes its value from (a parameter, or one element of a list parameter)."""

    __slots__ = ("converting", "places", "sql")

    def __init__(
        self,
        sql: str,
        places: list[tuple[str, int | None]],
        converters: list[Callable[[Any], Any] | None],
    ) -> None:
        self.sql = sql
        self.places = places
        self.converting = tuple(
            (place, convert) for place, convert in enumerate(converters) if convert is not None
        )

    @classmethod
    def of(cls, compiled: SQLCompiler, lists: Sequence[str], lengths: Sequence[int]) -> _Shape:
        binds = compiled.binds
        if not lists:
            names = compiled.positiontup or []
            return cls(
                compiled.string,
                [(name, None) for name in names],
                [_bind_processor(binds[name].type) for name in names],
            )
        sample: dict[str, Any] = {name: None for name in binds}
        sample.update((name, [None] * length) for name, length in zip(lists, lengths, strict=True))
        expanded = compiled.construct_expanded_state(sample)
        element_of = {
            one: (name, at)
            for name, ones in expanded.parameter_expansion.items()
            for at, one in enumerate(ones)
        }
        places: list[tuple[str, int | None]] = [
            element_of.get(one, (one, None)) for one in expanded.positiontup or []
        ]
        return cls(
            expanded.statement,
            places,
            [_bind_processor(binds[name].type) for name, _ in places],
        )


class _RowShape:
    """A SELECT's rows as named tuples, each value through its type's result processor."""

    def __init__(self, keys: Sequence[str], processors: list[Callable[[Any], Any] | None]) -> None:
        # Renamed where a column has no usable name (`max(seq)`): read by position.
        self._row: Any = collections.namedtuple("Row", keys, rename=True)  # type: ignore[misc]
        self._processing = tuple(
            (at, process) for at, process in enumerate(processors) if process is not None
        )

    @classmethod
    def of(cls, statement: ClauseElement) -> _RowShape | None:
        if not isinstance(statement, Select):
            return None
        columns = list(statement.selected_columns)
        return cls(
            [str(column.key) for column in columns],
            [
                column.type.dialect_impl(_PYSQLITE).result_processor(_PYSQLITE, None)
                for column in columns
            ],
        )

    def rows(self, fetched: list[Any]) -> list[Any]:
        make = self._row._make
        if not self._processing:
            return [make(values) for values in fetched]
        rows = []
        for stored in fetched:
            values = list(stored)
            for at, process in self._processing:
                values[at] = process(values[at])
            rows.append(make(values))
        return rows


def _bind_processor(kind: Any) -> Callable[[Any], Any] | None:
    processor: Callable[[Any], Any] | None = kind.dialect_impl(_PYSQLITE).bind_processor(_PYSQLITE)
    return processor


def _in_transaction(conn: Connection) -> None:
    """sqlite3 runs a statement outside a transaction as its own (the engines leave BEGIN
    to SQLAlchemy), so a batch's statements must run inside the one it began."""
    if not conn.in_transaction():
        raise RuntimeError("a SqliteStatement runs inside a transaction begun by SQLAlchemy")


def _wrapped(conn: Connection, sql: str, error: sqlite3.Error) -> sa_exc.StatementError:
    """The error as SQLAlchemy's execution layer would have raised it: a connection that
    is gone (a closed database) is invalidated, so the pool never hands it out again."""
    gone = conn.dialect.is_disconnect(cast(Any, error), conn.connection.dbapi_connection, None)
    if gone:
        conn.invalidate(error)
    return sa_exc.DBAPIError.instance(sql, None, error, sqlite3.Error, connection_invalidated=gone)
