"""PostgreSQL's pooled connections are pinged when they have been idle, not at every use.

asyncpg's ping is three round trips (BEGIN, `;`, ROLLBACK); at every checkout, as
SQLAlchemy's `pool_pre_ping` does, it tripled the cost of every read on a request's
path under a sale's load. What a ping is for still holds: a connection the server
closed is never handed out, however recently it was used, and the pool replaces them
all (db/database.py).
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

import boxoffice.db.database as database_module
from boxoffice.db.database import Database
from boxoffice.services.unit_of_work import UnitOfWork
from tests.support.postgres import TERMINATE_OUR_OTHER_SESSIONS

POSTGRESQL_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The readers' pool's pings, counted (each still pings the server)."""
    dialect = database.engine.sync_engine.dialect
    seen: list[object] = []
    ping = dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        seen.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return seen


async def _read(database: Database) -> int:
    """One read through the readers' pool; the server process that answered it."""
    async with UnitOfWork(database, write=False) as uow:
        return int((await uow.conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _kill_readers(database: Database) -> int:
    """Ends every session of the readers' pool, as a database restart or a failover does,
    from a connection of another pool; how many it ended."""
    async with database.write_engine.connect() as conn:
        killed = await conn.execute(text(TERMINATE_OUR_OTHER_SESSIONS))
        return int(killed.scalar_one())


@POSTGRESQL_ONLY
async def test_a_connection_back_from_use_a_moment_ago_is_not_pinged(
    database: Database, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    first = await _read(database)
    for _ in range(4):
        assert await _read(database) == first, "the pool opened another connection"
    assert pings == []


@POSTGRESQL_ONLY
async def test_a_connection_idle_for_a_while_is_pinged_once_before_use(
    database: Database, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 0.2)
    first = await _read(database)
    assert pings == [], "a connection just opened is not pinged"
    await asyncio.sleep(0.3)
    assert await _read(database) == first
    assert await _read(database) == first
    assert len(pings) == 1, "idle: pinged; back a moment later: not again"


@POSTGRESQL_ONLY
async def test_connections_the_server_closed_are_never_handed_out_even_just_used(
    database: Database, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping needed: asyncpg saw the socket close. Every pooled connection is replaced."""
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    # Two connections in the pool, both used a moment ago.
    async with UnitOfWork(database, write=False) as one, UnitOfWork(database, write=False) as two:
        before = {
            (await uow.conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            for uow in (one, two)
        }
    assert len(before) == 2
    assert await _kill_readers(database) == 2
    await asyncio.sleep(0.05)  # the sockets' ends reach asyncpg
    after = {await _read(database) for _ in range(4)}
    assert not after & before, "a connection the server closed was handed out"
    assert pings == []
