"""PostgreSQL: the writers' statements find their rows by key, however small the tables look.

A batch names its rows in JSON documents, which PostgreSQL counts as 100 rows
each. On a young database (no ANALYZE yet) the planner then prefers hashing
whole tables, and a prepared statement keeps that plan for its connection's
life: each batch read every hold, hold item and section (docs/performance.md).
The write pool's sessions plan with nested loops only (`KEYED_PLANNING`).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text

from boxoffice.booking.write import PG_WRITE
from boxoffice.db.database import Database
from boxoffice.db.tables import sections
from boxoffice.domain.model import EventSpec, SectionSpec
from boxoffice.services.events import create_event

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

KEYED_TABLES = ("sections", "holds", "hold_items", "bookings", "customer_tickets")


def _parameters() -> dict[str, object]:
    one = str(uuid.uuid4())
    return {
        "now": datetime.now(UTC),
        "sections": json.dumps(
            [{"id": one, "event_id": one, "drawn": 0, "remaining": 1, "held": 0, "sold": 0}]
        ),
        "holds": "[]",
        "items": "[]",
        "settled": json.dumps(
            [{"id": one, "event_id": one, "status": "confirmed", "expected": "active"}]
        ),
        "freed": json.dumps([{"hold_id": one, "section_id": one, "event_id": one}]),
        "bookings": "[]",
        "cancelled": json.dumps([{"id": one, "event_id": one}]),
        "tallies": json.dumps(
            [
                {"event_id": one, "customer_id": "c", "delta": 1, "cap": 4},
                {"event_id": one, "customer_id": "d", "delta": -1, "cap": 4},
            ]
        ),
        "answers": "[]",
        "trail": "[]",
    }


async def _plan(database: Database, *, write: bool) -> str:
    conn = await database.connect(write=write)
    try:
        rows = await conn.execute(text(f"EXPLAIN {PG_WRITE.text}"), _parameters())
        return "\n".join(row[0] for row in rows)
    finally:
        await conn.rollback()
        await conn.close()


async def test_the_batch_statement_reaches_every_row_through_an_index(database: Database) -> None:
    plan = await _plan(database, write=True)
    for table in KEYED_TABLES:
        assert f"Seq Scan on {table}" not in plan, plan
    assert "Hash Join" not in plan, plan
    assert "Merge Join" not in plan, plan


async def test_readers_keep_the_planners_full_choice(database: Database) -> None:
    """The control: the same statement on a reader's session is planned with whole-table
    scans (this is what the write pool's settings prevent), and readers are untouched."""
    plan = await _plan(database, write=False)
    assert any(f"Seq Scan on {table}" in plan for table in KEYED_TABLES), plan


def _nested_loops(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node] if node["Node Type"] == "Nested Loop" else []
    for child in node.get("Plans", []):
        found += _nested_loops(child)
    return found


async def test_every_join_of_the_batch_finds_its_rows_by_key(database: Database) -> None:
    """Nested loops only: each one's inner side must be an index lookup, a row by key
    per outer row. A CTE joined to another CTE is scanned whole per row of the other,
    quadratic in the batch's size (it was a fifth of a checkout batch's time)."""
    conn = await database.connect(write=True)
    try:
        rows = await conn.execute(text(f"EXPLAIN (FORMAT JSON) {PG_WRITE.text}"), _parameters())
        document = rows.scalar_one()
    finally:
        await conn.rollback()
        await conn.close()
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    loops = _nested_loops(plan)
    assert loops, plan
    for loop in loops:
        inner = loop["Plans"][1]
        if inner["Node Type"] == "Memoize":  # a cache over the lookup: still one per key
            inner = inner["Plans"][0]
        assert inner["Node Type"] in {"Index Scan", "Index Only Scan"}, json.dumps(loop, indent=1)


def _changes(*rows: tuple[str, str]) -> dict[str, object]:
    """One seat sold from each (section, event) named, and nothing else."""
    none = {key: "[]" for key in _parameters() if key not in ("now", "sections")}
    sections = [
        {"id": s, "event_id": e, "drawn": 1, "remaining": -1, "held": 0, "sold": 1} for s, e in rows
    ]
    return {**none, "now": datetime.now(UTC), "sections": json.dumps(sections)}


async def test_a_section_named_with_another_event_writes_nothing(database: Database) -> None:
    """The statement finds sections by (id, event): a section named with the wrong event
    fails the whole batch, the right one with it, and two events' sections write together."""
    first = await create_event(
        database, EventSpec(name="A", sections=(SectionSpec("S", 100, 5),)), datetime.now(UTC)
    )
    second = await create_event(
        database, EventSpec(name="B", sections=(SectionSpec("S", 100, 5),)), datetime.now(UTC)
    )
    mine, theirs = first.sections[0].id, second.sections[0].id
    conn = await database.connect(write=True)
    try:
        wrong = _changes((mine, first.id), (theirs, first.id))
        ok, _, _ = (await conn.execute(PG_WRITE, wrong)).one()
        assert ok is False
        both = _changes((mine, first.id), (theirs, second.id))
        ok, stale, _ = (await conn.execute(PG_WRITE, both)).one()
        assert (ok, stale) == (True, None)
        remaining = dict(
            (str(ident), left)
            for ident, left in await conn.execute(
                select(sections.c.id, sections.c.remaining).where(
                    sections.c.id.in_([uuid.UUID(mine), uuid.UUID(theirs)])
                )
            )
        )
        assert remaining == {mine: 4, theirs: 4}  # once each: the failed batch wrote nothing
    finally:
        await conn.rollback()
        await conn.close()
