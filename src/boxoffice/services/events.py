"""Organizer use cases: create an event with its sections, read and list events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, insert, select

from boxoffice.db.database import Database
from boxoffice.db.tables import events, sections
from boxoffice.domain.errors import EventNotFound
from boxoffice.domain.model import Event, EventSpec, Section
from boxoffice.services.ids import new_id, parse_id
from boxoffice.services.pages import Cursor, Page
from boxoffice.services.unit_of_work import UnitOfWork


async def create_event(database: Database, spec: EventSpec) -> Event:
    """Store a new event and all its sections in one transaction; every seat starts free."""
    event_id = new_id()
    now = datetime.now(UTC)
    section_rows = [
        {
            "id": new_id(),
            "event_id": event_id,
            "position": position,
            "name": section.name,
            "price_cents": section.price_cents,
            "capacity": section.capacity,
            "remaining": section.capacity,
        }
        for position, section in enumerate(spec.sections)
    ]
    async with UnitOfWork(database, write=True) as uow:
        await uow.conn.execute(
            insert(events), [{"id": event_id, "name": spec.name, "created_at": now}]
        )
        await uow.conn.execute(insert(sections), section_rows)
        await uow.commit()
    return Event(
        id=str(event_id),
        name=spec.name,
        created_at=now,
        sections=[_section(row) for row in section_rows],
    )


async def get_event(database: Database, event_id: str) -> Event:
    """The event with the live number of seats left in each section."""
    ident = parse_id(event_id)
    if ident is None:
        raise EventNotFound(event_id)
    async with UnitOfWork(database, write=False) as uow:
        row = (await uow.conn.execute(select(events).where(events.c.id == ident))).first()
        if row is None:
            raise EventNotFound(event_id)
        section_rows = (
            await uow.conn.execute(
                select(sections).where(sections.c.event_id == ident).order_by(sections.c.position)
            )
        ).all()
    return _event(row, section_rows)


async def list_events(database: Database, *, limit: int, cursor: Cursor | None) -> Page[Event]:
    """One page of events, newest first, each with its sections."""
    query = select(events).order_by(events.c.created_at.desc(), events.c.id.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(cursor.older_than(events.c.created_at, events.c.id))
    async with UnitOfWork(database, write=False) as uow:
        rows = (await uow.conn.execute(query)).all()
        page = rows[:limit]
        by_event: dict[uuid.UUID, list[Row[Any]]] = {row.id: [] for row in page}
        if by_event:
            section_rows = await uow.conn.execute(
                select(sections)
                .where(sections.c.event_id.in_(list(by_event)))
                .order_by(sections.c.event_id, sections.c.position)
            )
            for section_row in section_rows:
                by_event[section_row.event_id].append(section_row)
    next_cursor = Cursor(page[-1].created_at, page[-1].id).encode() if len(rows) > limit else None
    return Page([_event(row, by_event[row.id]) for row in page], next_cursor)


def _event(row: Row[Any], section_rows: Sequence[Row[Any]]) -> Event:
    return Event(
        id=str(row.id),
        name=row.name,
        created_at=row.created_at,
        sections=[_section(section._mapping) for section in section_rows],
    )


def _section(row: Any) -> Section:
    return Section(
        id=str(row["id"]),
        event_id=str(row["event_id"]),
        name=row["name"],
        price_cents=row["price_cents"],
        capacity=row["capacity"],
        remaining=row["remaining"],
    )
