"""Migrations: reversible, idempotent, and identical to the tables the code declares."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from boxoffice.booking import DirectBooker
from boxoffice.config import async_database_url
from boxoffice.db.database import Database
from boxoffice.db.migrate import current_revision, downgrade, head_revision, upgrade
from boxoffice.db.tables import audit_records, bookings, metadata
from boxoffice.domain.commands import Confirmation, ConfirmHold
from boxoffice.services.clock import FakeClock


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_schema_is_at_head_and_matches_the_declared_tables(database: Database) -> None:
    assert await current_revision(database) == head_revision()
    async with database.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_downgrade_and_upgrade_round_trip(database_url: str) -> None:
    await asyncio.to_thread(downgrade, database_url, "base")
    database = Database.from_url(async_database_url(database_url))
    try:
        async with database.engine.connect() as conn:
            assert {"events", "sections", "bookings"}.isdisjoint(await conn.run_sync(_tables))
        await asyncio.to_thread(upgrade, database_url)
        await asyncio.to_thread(upgrade, database_url)  # a second run is a no-op
        assert await current_revision(database) == head_revision()
        async with database.engine.connect() as conn:
            assert {"events", "sections", "bookings"} <= await conn.run_sync(_tables)
    finally:
        await database.dispose()


def _rows_at_0005() -> list[tuple[str, list[dict[str, Any]]]]:
    """Rows in every inventory table, consistent with each other, as 0005 held them."""
    e1, e2, s1, s2, h1, h2, b1, b2 = (uuid.uuid4() for _ in range(8))
    at = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
    later = at + timedelta(hours=1)

    def booking(
        ident: uuid.UUID, event: uuid.UUID, section: uuid.UUID, qty: int, **more: Any
    ) -> dict[str, Any]:
        return {
            "id": ident,
            "event_id": event,
            "section_id": section,
            "qty": qty,
            "unit_price_cents": 500,
            "total_price_cents": 500 * qty,
            "status": "confirmed",
            "created_at": at,
            "customer_id": None,
            "hold_id": None,
            "payment_reference": None,
            **more,
        }

    def item(hold: uuid.UUID, qty: int, active: bool) -> dict[str, Any]:
        return {
            "hold_id": hold,
            "section_id": s1,
            "event_id": e1,
            "position": 0,
            "qty": qty,
            "unit_price_cents": 500,
            "expires_at": later,
            "active": active,
        }

    def record(event: uuid.UUID, section: uuid.UUID, action: str, qty: int) -> dict[str, Any]:
        return {
            "at": at,
            "event_id": event,
            "section_id": section,
            "action": action,
            "qty": qty,
            "outcome": "ok",
        }

    return [
        (
            "events",
            [
                {"id": e1, "name": "One", "created_at": at, "max_per_customer": 4},
                {"id": e2, "name": "Two", "created_at": at, "max_per_customer": None},
            ],
        ),
        (
            "sections",
            [
                {
                    "id": s1,
                    "event_id": e1,
                    "position": 0,
                    "name": "A",
                    "price_cents": 500,
                    "capacity": 10,
                    "remaining": 7,
                    "held": 1,
                    "sold": 2,
                    "version": 3,
                },
                {
                    "id": s2,
                    "event_id": e2,
                    "position": 0,
                    "name": "A",
                    "price_cents": 500,
                    "capacity": 5,
                    "remaining": 4,
                    "held": 0,
                    "sold": 1,
                    "version": 1,
                },
            ],
        ),
        (
            "holds",
            [
                {
                    "id": h1,
                    "event_id": e1,
                    "customer_id": "c1",
                    "status": "active",
                    "expires_at": later,
                    "created_at": at,
                    "settled_at": None,
                },
                {
                    "id": h2,
                    "event_id": e1,
                    "customer_id": "c1",
                    "status": "confirmed",
                    "expires_at": later,
                    "created_at": at,
                    "settled_at": at,
                },
            ],
        ),
        ("hold_items", [item(h1, 1, True), item(h2, 2, False)]),
        (
            "bookings",
            [
                booking(b1, e2, s2, 1),
                booking(b2, e1, s1, 2, customer_id="c1", hold_id=h2, payment_reference="p"),
            ],
        ),
        (
            "customer_tickets",
            [{"event_id": e1, "customer_id": "c1", "tickets": 3, "max_tickets": 4}],
        ),
        (
            "idempotency_keys",
            [{"scope": "c1", "key": "k", "fingerprint": "f", "outcome": "{}", "created_at": at}],
        ),
        (
            "audit_records",
            [
                record(e1, s1, "create", 10),
                record(e2, s2, "create", 5),
                record(e1, s1, "hold", 1),
                record(e1, s1, "hold", 2),
                record(e1, s1, "confirm", 2),
                record(e2, s2, "book", 1),
            ],
        ),
    ]


def _primary_keys(connection: Connection) -> dict[str, list[str]]:
    found = inspect(connection)
    return {t: found.get_pk_constraint(t)["constrained_columns"] for t in found.get_table_names()}


async def _everything(database: Database, tables: list[str]) -> dict[str, list[Any]]:
    async with database.engine.connect() as conn:
        return {
            table: sorted(tuple(row) for row in await conn.execute(select(metadata.tables[table])))
            for table in tables
        }


async def test_event_keys_upgrade_a_database_with_rows_in_it(database_url: str) -> None:
    """0005 -> 0006 keeps every row as it was, puts the new keys in place, and the
    database goes on: a hold placed before confirms, a key checks its event, SQLite
    numbers the audit records that follow."""
    await asyncio.to_thread(downgrade, database_url, "0005_fraud_flags")
    database = Database.from_url(async_database_url(database_url))
    rows = _rows_at_0005()
    tables = [table for table, _ in rows]
    try:
        async with database.engine.begin() as conn:
            for table, values in rows:
                await conn.execute(insert(metadata.tables[table]), values)
        before = await _everything(database, tables)
        await asyncio.to_thread(upgrade, database_url)
        assert await current_revision(database) == head_revision()
        assert await _everything(database, tables) == before
        async with database.engine.connect() as conn:
            keys = await conn.run_sync(_primary_keys)
        for table in tables:
            declared = [c.name for c in metadata.tables[table].primary_key.columns]
            assert keys[table] == declared, table

        hold_id, other_event = rows[2][1][0]["id"], rows[0][1][1]["id"]
        with pytest.raises(IntegrityError):  # a booking of one event, the hold of another
            async with database.engine.begin() as conn:
                await conn.execute(
                    insert(bookings),
                    {
                        **rows[4][1][0],
                        "id": uuid.uuid4(),
                        "hold_id": hold_id,
                        "event_id": other_event,
                    },
                )
        booker = DirectBooker(database, max_tickets_per_booking=10, clock=FakeClock())
        await booker.start()
        try:
            confirmed = await booker.submit(ConfirmHold(str(hold_id), "pay"))
        finally:
            await booker.stop()
        assert isinstance(confirmed, Confirmation)
        async with database.engine.connect() as conn:
            numbers = (await conn.execute(select(audit_records.c.seq))).scalars().all()
        assert len(numbers) == len(set(numbers)) == len(rows[-1][1]) + 1
        assert max(numbers) == len(numbers)  # numbered on from the rows before
    finally:
        await database.dispose()
