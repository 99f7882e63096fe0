"""PostgreSQL's pooled connections are pinged when they have been idle, not at every use.

asyncpg's ping is three round trips (BEGIN, `;`, ROLLBACK); at every checkout, as
SQLAlchemy's `pool_pre_ping` does, it tripled the cost of every read on a request's
path under a sale's load. What a ping is for still holds: a connection that died
while idle is replaced before anyone uses it; one that died a moment after its last
use fails one read, cleanly, and the pool replaces them all (db/database.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import text

import boxoffice.db.database as database_module
from boxoffice.db.database import Database
from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.services.unit_of_work import UnitOfWork

POSTGRESQL_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """The readers' pool's pings, counted (each still pings the server)."""
    dialect = database.engine.sync_engine.dialect
    seen: list[object] = []
    ping = dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        seen.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    yield seen


async def _read(database: Database) -> int:
    async with UnitOfWork(database, write=False) as uow:
        return int((await uow.conn.execute(text("SELECT 1"))).scalar_one())


async def _kill_sessions(database: Database) -> None:
    """Ends every other session of ours, as a database restart or a failover does."""
    async with database.engine.connect() as conn:
        await conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) "
                "FROM pg_stat_activity "
                "WHERE application_name = 'boxoffice' AND pid <> pg_backend_pid()"
            )
        )


@POSTGRESQL_ONLY
async def test_a_connection_back_from_use_a_moment_ago_is_not_pinged(
    database: Database, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    for _ in range(5):
        assert await _read(database) == 1
    assert pings == []


@POSTGRESQL_ONLY
async def test_a_connection_idle_for_a_while_is_pinged_once_before_use(
    database: Database, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 0.2)
    assert await _read(database) == 1
    assert pings == [], "a connection just opened is not pinged"
    await asyncio.sleep(0.3)
    assert await _read(database) == 1
    assert await _read(database) == 1
    assert len(pings) == 1, "idle: pinged; back a moment later: not again"


@POSTGRESQL_ONLY
async def test_a_connection_that_died_while_idle_is_replaced_before_use(
    database: Database, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 0.2)
    assert await _read(database) == 1
    await _kill_sessions(database)
    await asyncio.sleep(0.3)
    assert await _read(database) == 1, "the dead connection was handed out"
    assert pings, "it was not pinged"


@POSTGRESQL_ONLY
async def test_a_connection_that_died_a_moment_after_use_fails_one_read_then_all_are_new(
    database: Database, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    # Two connections in the pool, both used a moment ago.
    async with UnitOfWork(database, write=False) as first, UnitOfWork(
        database, write=False
    ) as second:
        await first.conn.execute(text("SELECT 1"))
        await second.conn.execute(text("SELECT 1"))
    await _kill_sessions(database)
    with pytest.raises(DatabaseUnavailable):
        await _read(database)
    # The failure replaced every pooled connection: the other dead one is not met.
    for _ in range(3):
        assert await _read(database) == 1
    assert pings == []
