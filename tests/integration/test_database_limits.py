"""The DB_* settings mean what the README says: a process opens at most DB_POOL_SIZE
connections, and no statement, lock wait or pool wait lasts forever."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from boxoffice.booking import BatchedBooker
from boxoffice.config import async_database_url
from boxoffice.db.database import Database, Limits
from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.domain.commands import Book
from boxoffice.services.unit_of_work import UnitOfWork
from tests.integration.test_booking_path import inventory, new_event
from tests.support.postgres import ThrowawayPostgres

POSTGRESQL_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@POSTGRESQL_ONLY
async def test_every_session_carries_the_statement_and_lock_timeouts(database_url: str) -> None:
    limited = Database.from_url(
        async_database_url(database_url), limits=Limits(statement_timeout=1.5, lock_timeout=0.25)
    )
    try:
        for engine in (limited.engine, limited.write_engine):
            async with engine.connect() as conn:
                shown = [
                    (await conn.execute(text(f"SHOW {name}"))).scalar_one()
                    for name in (
                        "statement_timeout",
                        "lock_timeout",
                        "idle_in_transaction_session_timeout",
                    )
                ]
            assert shown == ["1500ms", "250ms", "1min"]
    finally:
        await limited.dispose()


@POSTGRESQL_ONLY
async def test_a_statement_past_its_timeout_is_unavailable_not_a_hang(database_url: str) -> None:
    limited = Database.from_url(
        async_database_url(database_url), limits=Limits(statement_timeout=0.3)
    )
    try:
        with pytest.raises(DatabaseUnavailable):
            async with UnitOfWork(limited, write=False) as uow:
                await asyncio.wait_for(uow.conn.execute(text("SELECT pg_sleep(30)")), 20)
    finally:
        await limited.dispose()


@POSTGRESQL_ONLY
async def test_a_booking_behind_a_held_row_lock_fails_503_at_the_lock_timeout(
    database: Database, database_url: str
) -> None:
    """Another session keeps the section locked: the batch gives up at `lock_timeout`
    (the statement timeout is far longer, so only the lock timeout can end it), nothing is
    written, and the booking goes through once the lock is gone."""
    event = await new_event(database, 10)
    section = event.sections[0].id
    limited = Database.from_url(
        async_database_url(database_url),
        limits=Limits(statement_timeout=600, lock_timeout=0.3),
    )
    booker = BatchedBooker(limited, max_tickets_per_booking=10, queue_timeout_seconds=0)
    await booker.start()
    try:
        async with database.engine.connect() as blocker:
            await blocker.begin()
            await blocker.execute(
                text("SELECT 1 FROM sections WHERE id = :id FOR UPDATE"),
                {"id": uuid.UUID(section)},
            )
            with pytest.raises(DatabaseUnavailable):
                await asyncio.wait_for(booker.submit(Book(event.id, section, 2)), 60)
            await blocker.rollback()
        booked = await asyncio.wait_for(booker.submit(Book(event.id, section, 3)), 60)
        assert booked.qty == 3  # type: ignore[union-attr]
    finally:
        await booker.stop()
        await limited.dispose()
    assert await inventory(database, section) == (10, 7, 3)


@POSTGRESQL_ONLY
async def test_a_process_never_opens_more_than_db_pool_size_connections(
    database_url: str, postgres: ThrowawayPostgres
) -> None:
    """60 concurrent slow reads and writes on a pool of 6: they queue for connections
    (and all finish), and the server never sees more than 6 sessions of ours."""
    name = database_url.rsplit("/", 1)[1]
    limited = Database.from_url(async_database_url(database_url), limits=Limits(pool_size=6))
    peak = 0

    async def count() -> None:
        nonlocal peak
        while True:
            sessions = int(
                await asyncio.to_thread(
                    postgres.psql,
                    "SELECT count(*) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND application_name = 'boxoffice'",
                )
            )
            peak = max(peak, sessions)
            await asyncio.sleep(0.05)

    async def slow(write: bool) -> None:
        async with UnitOfWork(limited, write=write) as uow:
            await uow.conn.execute(text("SELECT pg_sleep(0.05)"))
            await uow.commit()

    counter = asyncio.create_task(count())
    try:
        await asyncio.wait_for(asyncio.gather(*(slow(n % 2 == 0) for n in range(60))), 120)
    finally:
        counter.cancel()
        await limited.dispose()
    assert 1 <= peak <= 6
    readers, writers = Limits(pool_size=6).split()
    assert (readers, writers) == (3, 3)


@SQLITE_ONLY
def test_on_sqlite_the_writer_is_one_of_the_pool(database_url: str) -> None:
    limited = Database.from_url(async_database_url(database_url), limits=Limits(pool_size=5))
    assert limited.engine.pool.size() == 4  # type: ignore[attr-defined]
    assert limited.writer is not None


def test_the_split_keeps_writers_at_least_three_and_the_total_exact() -> None:
    for size in range(4, 200):
        readers, writers = Limits(pool_size=size).split()
        assert readers + writers == size
        assert writers >= 3
        assert readers >= 1
