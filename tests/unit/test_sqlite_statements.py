"""`SqliteStatement`: statements run on sqlite3 itself store what SQLAlchemy would store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    case,
    create_engine,
    func,
    insert,
    select,
    text,
    union,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.types import Uuid

from boxoffice.db import driver
from boxoffice.db.driver import SqliteStatement
from boxoffice.db.errors import is_unavailable
from boxoffice.db.types import UTCDateTime

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=True),
    Column("count", Integer, CheckConstraint("count >= 0"), nullable=False),
)
COLUMNS = [column.key for column in things.c]
WHEN = datetime(2026, 12, 2, 7, 0, 1, 250000, tzinfo=UTC)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    engine = create_engine(f"sqlite:///{tmp_path / 'things.db'}")
    metadata.create_all(engine)
    with engine.begin() as connection:
        yield connection
    engine.dispose()


def _stored(conn: Connection) -> list[tuple[object, ...]]:
    driver = conn.connection.driver_connection
    assert driver is not None
    return list(driver.execute("SELECT id, name, at, count FROM things ORDER BY name"))


def test_rows_are_stored_exactly_as_sqlalchemy_stores_them(conn: Connection) -> None:
    ours, theirs = uuid.UUID(int=1), uuid.UUID(int=2)
    SqliteStatement(insert(things), column_keys=COLUMNS).run_many(
        conn, [{"id": ours, "name": "a", "at": WHEN, "count": 1}]
    )
    conn.execute(insert(things), [{"id": theirs, "name": "b", "at": WHEN, "count": 1}])
    (a, b) = _stored(conn)
    assert a[2:] == b[2:]
    assert a[2] == "2026-12-02 07:00:01.250000"
    assert a[0] == ours.hex
    assert b[0] == theirs.hex
    # and SQLAlchemy reads ours back as its own
    read = conn.execute(select(things).where(things.c.id == ours)).one()
    assert read.at == WHEN
    assert read.id == ours


def test_the_rowcount_counts_every_row_changed(conn: Connection) -> None:
    add = SqliteStatement(insert(things), column_keys=COLUMNS)
    rows = [{"id": uuid.UUID(int=n), "name": f"t{n}", "at": None, "count": n} for n in range(1, 4)]
    assert add.run_many(conn, rows) == 3
    bump = SqliteStatement(
        update(things)
        .where(things.c.id == bindparam("ident"))
        .values(count=things.c.count + 1, at=bindparam("when", type_=UTCDateTime))
    )
    changed = bump.run_many(
        conn,
        [{"ident": uuid.UUID(int=1), "when": WHEN}, {"ident": uuid.UUID(int=9), "when": WHEN}],
    )
    assert changed == 1  # the second names no row
    assert [row[3] for row in _stored(conn)] == [2, 2, 3]
    assert _stored(conn)[0][2] == "2026-12-02 07:00:01.250000"


def test_a_parameter_without_a_type_is_refused_when_the_statement_is_made() -> None:
    # sqlite3 would store an aware datetime in its own format ("…+00:00"), not ours: the
    # else of a CASE takes no type from the column it is written to.
    with pytest.raises(TypeError, match="'when'"):
        SqliteStatement(
            update(things).values(
                at=case(
                    (things.c.count == bindparam("count"), things.c.at), else_=bindparam("when")
                )
            )
        )


def test_errors_leave_wrapped_as_sqlalchemy_wraps_them(conn: Connection) -> None:
    add = SqliteStatement(insert(things), column_keys=COLUMNS)
    row = {"id": uuid.UUID(int=1), "name": "a", "at": None, "count": 1}
    add.run_many(conn, [row])
    with pytest.raises(sa_exc.IntegrityError) as twice:
        add.run_many(conn, [row])
    assert "UNIQUE" in str(twice.value.orig)
    assert not is_unavailable(twice.value)
    with pytest.raises(sa_exc.IntegrityError, match="CHECK"):
        add.run_many(conn, [{**row, "id": uuid.UUID(int=2), "count": -1}])


def test_fetch_returns_stored_values(conn: Connection) -> None:
    SqliteStatement(insert(things), column_keys=COLUMNS).run_many(
        conn, [{"id": uuid.UUID(int=n), "name": f"t{n}", "at": None, "count": n} for n in (1, 5)]
    )
    biggest = SqliteStatement(select(things.c.count).where(things.c.count < bindparam("below")))
    assert sorted(biggest.execute(conn, {"below": 5})) == [(1,)]


def test_list_parameters_expand_to_each_length_and_rows_come_back_typed(
    conn: Connection,
) -> None:
    SqliteStatement(insert(things), column_keys=COLUMNS).run_many(
        conn,
        [
            {"id": uuid.UUID(int=n), "name": f"t{n}", "at": WHEN if n % 2 else None, "count": n}
            for n in range(1, 6)
        ],
    )
    named = SqliteStatement(
        select(things.c.id, things.c.at, things.c.count)
        .where(
            things.c.id.in_(bindparam("ids", expanding=True)),
            things.c.count >= bindparam("least"),
        )
        .order_by(things.c.count)
    )
    for ids, least, expected in [
        ([1, 2, 3], 2, [2, 3]),
        ([5], 0, [5]),
        ([4, 5, 1], 0, [1, 4, 5]),
        ([], 0, []),
        ([2, 3, 9], 3, [3]),  # a length seen before, other values
    ]:
        rows = named.execute(conn, {"ids": [uuid.UUID(int=n) for n in ids], "least": least})
        assert [row.count for row in rows] == expected
        for row in rows:  # as SQLAlchemy's rows hold them: a UUID, an aware datetime
            assert row.id == uuid.UUID(int=row.count)
            assert row.at == (WHEN if row.count % 2 else None)
    with pytest.raises(TypeError, match="list parameters"):
        named.run_many(conn, [{"ids": [uuid.UUID(int=1)], "least": 0}])


async def test_a_connection_not_sqlite3s_runs_the_statement_through_sqlalchemy(
    tmp_path: Path,
) -> None:
    """aiosqlite's through `run_sync` (or PostgreSQL's): the same rows, by SQLAlchemy."""
    url = f"sqlite:///{tmp_path / 'things.db'}"
    blocking = create_engine(url)
    metadata.create_all(blocking)
    add = SqliteStatement(insert(things), column_keys=COLUMNS)
    read = SqliteStatement(select(things.c.id, things.c.at).where(things.c.count == 1))
    with blocking.begin() as conn:
        add.run_many(conn, [{"id": uuid.UUID(int=1), "name": "a", "at": WHEN, "count": 1}])
        ours = [tuple(row) for row in read.execute(conn, {})]
    blocking.dispose()
    engine = create_async_engine(url.replace("sqlite:", "sqlite+aiosqlite:"))
    try:
        async with engine.begin() as conn:
            added = await conn.run_sync(
                add.run_many, [{"id": uuid.UUID(int=2), "name": "b", "at": None, "count": 2}]
            )
            theirs = [tuple(row) for row in await conn.run_sync(read.execute, {})]
    finally:
        await engine.dispose()
    assert added == 1
    assert ours == theirs == [(uuid.UUID(int=1), WHEN)]


def test_expanded_texts_are_kept_within_a_bound(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver, "MAX_SHAPES", 3)
    named = SqliteStatement(
        select(things.c.count).where(things.c.count.in_(bindparam("n", expanding=True)))
    )
    for length in range(1, 8):
        assert named.execute(conn, {"n": list(range(length))}) == []
        assert len(named._shapes) <= 3


def test_a_statement_returning_rows_other_than_a_plain_select_is_refused() -> None:
    """Their rows would come back as stored (hex ids, text timestamps), unconverted."""
    both = union(select(things.c.id), select(things.c.id))
    for returning in (
        both,
        text("SELECT id FROM things"),
        insert(things).returning(things.c.id),
    ):
        with pytest.raises(TypeError, match="returns rows"):
            SqliteStatement(returning)


def test_it_runs_only_inside_a_transaction_and_a_rollback_undoes_it(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'things.db'}")
    metadata.create_all(engine)
    add = SqliteStatement(insert(things), column_keys=COLUMNS)
    row = {"id": uuid.UUID(int=1), "name": "a", "at": None, "count": 1}
    try:
        with engine.connect() as conn:
            # sqlite3 would commit it at once, on its own
            with pytest.raises(RuntimeError, match="inside a transaction"):
                add.run_many(conn, [row])
            with conn.begin() as transaction:
                add.run_many(conn, [row])
                transaction.rollback()
            assert conn.execute(select(func.count()).select_from(things)).scalar() == 0
    finally:
        engine.dispose()


def test_a_locked_or_closed_database_is_unavailable(tmp_path: Path) -> None:
    """As through SQLAlchemy: a 503 to retry, not a bug narrowed command by command."""
    url = f"sqlite:///{tmp_path / 'things.db'}"
    holder = create_engine(url)
    waiter = create_engine(url, connect_args={"timeout": 0})
    metadata.create_all(holder)
    add = SqliteStatement(insert(things), column_keys=COLUMNS)
    row = {"id": uuid.UUID(int=1), "name": "a", "at": None, "count": 1}
    try:
        with holder.connect() as holding:
            driver = holding.connection.driver_connection
            assert driver is not None
            driver.execute("BEGIN IMMEDIATE")  # the write lock, held
            with waiter.begin() as conn, pytest.raises(sa_exc.OperationalError) as locked:
                add.run_many(conn, [row])
            assert is_unavailable(locked.value)
            driver.execute("ROLLBACK")
        with waiter.connect() as conn:
            transaction = conn.begin()
            gone = conn.connection.driver_connection
            assert gone is not None
            gone.close()
            with pytest.raises(sa_exc.DBAPIError) as closed:
                add.run_many(conn, [row])
            assert is_unavailable(closed.value)
            assert conn.invalidated  # never handed out again
            transaction.rollback()
    finally:
        holder.dispose()
        waiter.dispose()
