"""Every inventory table can be distributed by event (docs/scaling.md), and stays so.

A distributed PostgreSQL (Citus) needs each distributed table's distribution
column in its primary key, in every unique constraint or unique index, and on
both sides of every foreign key between distributed tables; and, for a
transaction to stay on one shard, in every statement's WHERE. These tests read
the migrated schema as each database reports it (on PostgreSQL from its
catalog too), and the statements the booking path really runs, as the
database received them (PostgreSQL's statement log; SQLite's trace of the
writer's connection), so that neither a migration nor a query can lose
`event_id` unnoticed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from boxoffice.booking import BatchedBooker
from boxoffice.booking.sweeper import Sweeper
from boxoffice.db.database import Database
from boxoffice.db.tables import DISTRIBUTION_COLUMNS, LOCAL_TABLES, REFERENCE_TABLES, metadata
from boxoffice.domain.access import OPEN_ACCESS
from boxoffice.domain.commands import (
    Book,
    CancelBooking,
    Confirmation,
    ConfirmHold,
    HoldItemRequest,
    Idempotency,
    PlaceHold,
    ReleaseHold,
)
from boxoffice.domain.model import Booking, EventSpec, Hold, SectionSpec
from boxoffice.domain.waiting_room import RoomSettings
from boxoffice.services import waiting_room as rooms
from boxoffice.services.clock import FakeClock
from boxoffice.services.events import create_event
from boxoffice.services.waiting_room import Joining
from tests.support.statement_log import Transactions

DISTRIBUTED = DISTRIBUTION_COLUMNS


# The schema ------------------------------------------------------------------------------


def test_every_table_is_distributed_or_says_why_not() -> None:
    placed = [*DISTRIBUTED, *REFERENCE_TABLES, *LOCAL_TABLES]
    assert sorted(placed) == sorted(metadata.tables), "place every new table in db/tables.py"
    assert len(set(placed)) == len(placed)


@dataclass
class Keys:
    primary: list[str]
    unique: list[list[str]]  # unique constraints and unique indexes, the primary key's too
    foreign: list[tuple[str, list[str], list[str]]]  # (referred table, columns, referred)


def _keys(connection: Connection) -> dict[str, Keys]:
    found = inspect(connection)
    keys = {}
    for table in found.get_table_names():
        primary = found.get_pk_constraint(table)["constrained_columns"]
        unique = [list(u["column_names"]) for u in found.get_unique_constraints(table)]
        unique += [
            [str(c) for c in i["column_names"]] for i in found.get_indexes(table) if i["unique"]
        ]
        foreign = [
            (f["referred_table"], f["constrained_columns"], f["referred_columns"])
            for f in found.get_foreign_keys(table)
        ]
        keys[table] = Keys(primary, [primary, *unique], foreign)
    return keys


def _check(table: str, keys: Keys) -> list[str]:
    """What keeps `table` from being distributed by its column: nothing, if all is well."""
    column = DISTRIBUTED[table]
    wrong = [
        f"{table}: unique {unique} lacks {column}" for unique in keys.unique if column not in unique
    ]
    for referred, columns, referred_columns in keys.foreign:
        if referred not in DISTRIBUTED:
            wrong.append(f"{table}: foreign key to {referred}, which is not distributed")
        elif (column, DISTRIBUTED[referred]) not in zip(columns, referred_columns, strict=True):
            wrong.append(f"{table}: foreign key {columns} -> {referred} {referred_columns}")
    return wrong


async def test_every_inventory_key_holds_the_distribution_column(database: Database) -> None:
    async with database.engine.connect() as conn:
        stored = await conn.run_sync(_keys)
    wrong = [problem for table in DISTRIBUTED for problem in _check(table, stored[table])]
    assert wrong == []
    # Alembic's comparison (test_migrations) does not look at primary keys: this does.
    for table in DISTRIBUTED:
        declared = [column.name for column in metadata.tables[table].primary_key.columns]
        assert stored[table].primary == declared, table


def test_a_key_without_the_event_is_caught() -> None:
    keys = Keys(
        ["id"],
        [["id"], ["event_id", "name"]],
        [
            ("holds", ["hold_id"], ["id"]),
            ("sections", ["section_id", "event_id"], ["id", "event_id"]),
        ],
    )
    assert _check("bookings", keys) == [
        "bookings: unique ['id'] lacks event_id",
        "bookings: foreign key ['hold_id'] -> holds ['id']",
    ]


_PG_UNIQUE_INDEXES = """
    SELECT t.relname, i.indexrelid::regclass::text,
           array_agg(a.attname::text ORDER BY a.attname)
      FROM pg_index AS i
      JOIN pg_class AS t ON t.oid = i.indrelid
      JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey)
     WHERE i.indisunique AND t.relnamespace = 'public'::regnamespace
     GROUP BY 1, 2
"""
_PG_FOREIGN_KEYS = """
    SELECT c.conname, t.relname, r.relname,
           ARRAY(SELECT attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o)
                   JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.n ORDER BY k.o),
           ARRAY(SELECT attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(n, o)
                   JOIN pg_attribute ON attrelid = c.confrelid AND attnum = k.n ORDER BY k.o)
      FROM pg_constraint AS c
      JOIN pg_class AS t ON t.oid = c.conrelid
      JOIN pg_class AS r ON r.oid = c.confrelid
     WHERE c.contype = 'f' AND t.relnamespace = 'public'::regnamespace
"""


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_catalog_agrees(database: Database) -> None:
    """Every unique index PostgreSQL keeps (primary keys included, whether or not a
    constraint declares it) and every foreign key, straight from its catalog."""
    async with database.engine.connect() as conn:
        indexes = (await conn.execute(text(_PG_UNIQUE_INDEXES))).all()
        foreign = (await conn.execute(text(_PG_FOREIGN_KEYS))).all()
    seen = {table for table, _, _ in indexes}
    assert set(DISTRIBUTED) <= seen
    wrong = [
        f"{index} on {table}: {columns}"
        for table, index, columns in indexes
        if table in DISTRIBUTED and DISTRIBUTED[table] not in columns
    ]
    for name, table, referred, columns, referred_columns in foreign:
        if table in DISTRIBUTED and (DISTRIBUTED[table], DISTRIBUTED.get(referred)) not in zip(
            columns, referred_columns, strict=True
        ):
            wrong.append(f"{name}: {table} {columns} -> {referred} {referred_columns}")
    assert wrong == []


# The statements ---------------------------------------------------------------------------

# Statements, or parts of one, that may touch a distributed table without naming its column,
# and why. Each is removed from the text before it is checked.
EXEMPT = [
    # The sweeper purges old idempotency keys of every caller at once: off the booking
    # path, and on a distributed database one DELETE on every shard.
    r"^DELETE FROM idempotency_keys WHERE idempotency_keys\.created_at < .*$",
    # SQLite numbers audit records itself (db/tables.py); SQLite is never distributed.
    r"^SELECT max\(audit_records\.seq\) AS max_1\s+FROM audit_records$",
]
_TABLE = "|".join(DISTRIBUTED)
_READS = re.compile(rf"\b(?:FROM|JOIN|UPDATE)\s+({_TABLE})\b(?:\s+AS\s+(\w+)\b)?", re.I)
_INSERTS = re.compile(rf"\bINSERT\s+INTO\s+({_TABLE})\s*\(([^)]*)\)", re.I)
_CTE = re.compile(r"(?:^\s*WITH|\)\s*,)\s*\w+\s+AS\s+\(", re.I)


def unnamed(sql: str) -> list[str]:
    """Each table reference in `sql` that does not name its distribution column: for a
    read, update or delete, in its WHERE; for an insert, among its columns. A statement
    of several parts (PostgreSQL's CTEs) is checked part by part."""
    for pattern in EXEMPT:
        sql = re.sub(pattern, "", sql, flags=re.I | re.S | re.M)
    wrong = []
    for part in _CTE.split(sql):
        where = re.split(r"\bWHERE\b", part, maxsplit=1, flags=re.I)
        condition = where[1] if len(where) > 1 else ""
        for table, alias in _READS.findall(part):
            column = DISTRIBUTED[table.lower()]
            if table.lower() == "events":  # joined on its id, or looked up by it
                named = re.search(rf"\b{alias or table}\.id\b", part, re.I)
            else:
                named = re.search(rf"\b{alias or table}\.{column}\b", condition, re.I)
            if not named:
                wrong.append(f"{table} without {column}: {' '.join(part.split())[:300]}")
        for table, columns in _INSERTS.findall(part):
            column = DISTRIBUTED[table.lower()]
            if column not in re.findall(r"\w+", columns):
                wrong.append(f"insert into {table} without {column}")
    return wrong


def test_a_statement_without_the_event_is_caught() -> None:
    good = (
        "SELECT holds.id FROM holds JOIN events ON events.id = holds.event_id "
        "WHERE holds.event_id IN ($1) AND holds.id IN ($2)"
    )
    assert unnamed(good) == []
    assert unnamed(good.replace("holds.event_id IN ($1) AND ", "")) != []
    assert unnamed("UPDATE bookings AS b SET status = 'x' FROM c WHERE b.id = c.id") != []
    assert unnamed("INSERT INTO bookings (id, section_id) VALUES (?, ?)") != []
    cte = "WITH a AS (SELECT 1), b AS (UPDATE sections AS s SET x = 1 WHERE s.id = 1) SELECT 1"
    assert unnamed(cte) != []


@pytest.fixture
def sqlite_writer() -> str:
    """SQLite's writer in this process, so its connection can be traced."""
    return "thread"


TTL = 60


async def waiting_room_writes(database: Database, clock: FakeClock, event_id: str) -> None:
    """The waiting room's writes: its settings, two customers joining (one twice), the
    admission loop letting them in."""
    settings = RoomSettings(True, None, 60, 60, 600)
    await rooms.put_room(database, event_id, settings, OPEN_ACCESS, clock())
    joins = [Joining(event_id, customer, 2**48 + n, clock()) for n, customer in enumerate("aab")]
    await rooms.join(database, joins)
    lease = timedelta(seconds=5)
    admitted = await rooms.admit(
        database, event_id, holder="p1", now=clock(), lease=lease, clock_skew=timedelta()
    )
    assert admitted is not None
    assert admitted.watermark == 2**48 + 2


async def a_sale(database: Database, clock: FakeClock) -> None:
    """Every command of the booking path: book (alone, in a batch, keyed, replayed), hold,
    confirm, release, cancel, refusals that expired holds resolve, and the sweeper; on
    PostgreSQL both the locked way and from memory."""
    booker = BatchedBooker(database, max_tickets_per_booking=10, clock=clock)
    other = BatchedBooker(database, max_tickets_per_booking=10, clock=clock)  # another process
    sweeper = Sweeper(database, clock=clock, interval_seconds=0, idempotency_ttl_hours=1)
    await booker.start()
    await other.start()
    try:
        capped = await create_event(
            database,
            EventSpec("Capped", (SectionSpec("A", 1000, 20), SectionSpec("B", 1000, 20)), 4),
            clock(),
        )
        spec = EventSpec("Open", (SectionSpec("A", 500, 6), SectionSpec("B", 500, 50)))
        open_ = await create_event(database, spec, clock(), idempotency=Idempotency("o", "e", "f"))
        a, b = (s.id for s in capped.sections)
        small, big = (s.id for s in open_.sections)
        key = Idempotency("c1", "k1", "f1")
        await asyncio.gather(  # one batch, two events
            booker.submit(Book(capped.id, a, 2, "c1", key)),
            booker.submit(Book(open_.id, big, 1)),
            booker.submit(PlaceHold(open_.id, (HoldItemRequest(big, 1),), TTL)),
        )
        assert isinstance(await booker.submit(Book(capped.id, a, 2, "c1", key)), Booking)
        booked = await booker.submit(Book(open_.id, big, 1))  # from memory on PostgreSQL
        assert isinstance(booked, Booking)
        hold = await booker.submit(PlaceHold(open_.id, (HoldItemRequest(big, 2),), TTL))
        assert isinstance(hold, Hold)
        confirmed = await booker.submit(ConfirmHold(hold.id, "pay"))  # from memory too
        assert isinstance(confirmed, Confirmation)
        items = (HoldItemRequest(a, 1), HoldItemRequest(b, 1))
        elsewhere = await booker.submit(PlaceHold(capped.id, items, TTL, "c2"))
        assert isinstance(elsewhere, Hold)
        confirmed = await other.submit(ConfirmHold(elsewhere.id))  # its event read first
        assert isinstance(confirmed, Confirmation)
        released = await booker.submit(PlaceHold(capped.id, (HoldItemRequest(b, 1),), TTL, "c3"))
        assert isinstance(released, Hold)
        await other.submit(ReleaseHold(released.id))
        await other.submit(CancelBooking(booked.id))
        await other.submit(CancelBooking(confirmed.bookings[0].id))
        # Holds that lapse: their seats and tickets are given back when needed, or swept.
        await booker.submit(PlaceHold(open_.id, (HoldItemRequest(small, 5),), TTL))
        await booker.submit(PlaceHold(capped.id, (HoldItemRequest(b, 2),), TTL, "c4"))
        await booker.submit(PlaceHold(capped.id, (HoldItemRequest(a, 1),), TTL, "c5"))
        clock.advance(TTL + 1)
        assert isinstance(await booker.submit(Book(open_.id, small, 5)), Booking)
        assert isinstance(await booker.submit(Book(capped.id, a, 4, "c4")), Booking)
        assert await sweeper.sweep() > 0  # the seats of c4's lapsed hold in B
        await waiting_room_writes(database, clock, open_.id)
    finally:
        await other.stop()
        await booker.stop()


async def test_every_write_of_the_booking_path_names_the_event(
    database: Database, traced: Callable[[], Transactions]
) -> None:
    await a_sale(database, FakeClock())
    await asyncio.sleep(0.2)  # PostgreSQL writes its log as it runs: let the last lines land
    seen = traced()
    writes = seen.writes()
    touched = {table.lower() for sql in writes for table, _ in _READS.findall(sql)}
    touched |= {table.lower() for sql in writes for table, _ in _INSERTS.findall(sql)}
    expected = set(DISTRIBUTED)  # the sale wrote every table: the check is not empty
    if database.dialect == "sqlite":
        # SQLite traces the writer's connections only; the waiting room writes through the
        # pool's (aiosqlite), which PostgreSQL's statement log sees.
        expected -= {"waiting_rooms", "queue_places", "admission_steps"}
    assert touched == expected
    assert [problem for sql in writes for problem in unnamed(sql)] == []
    if database.dialect == "postgresql":  # the one-statement batches (from memory) too
        assert any(len(tx) == 1 and tx[0].lstrip().startswith("WITH s_new") for tx in seen.done)
