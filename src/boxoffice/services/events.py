"""Organizer use cases: create an event with its sections, read and list events.

Reads show each section as any reader must see it: seats of holds that have
expired count as remaining, not held, whether or not the sweeper has given
them back in the row yet. Section and expired seats are read in one
statement, so the counts always add up to the capacity.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.booking.load import claim_answers
from boxoffice.booking.write import LAST_AUDIT_SEQ, audit_rows
from boxoffice.db.database import Database
from boxoffice.db.tables import audit_records, events, hold_items, idempotency_keys, sections
from boxoffice.domain.access import Principal
from boxoffice.domain.audit import AuditRecord
from boxoffice.domain.commands import Idempotency
from boxoffice.domain.errors import (
    BoxofficeError,
    EventNotFound,
    IdempotencyInProgress,
    IdempotencyKeyReused,
)
from boxoffice.domain.ids import new_id, parse_id
from boxoffice.domain.model import Event, EventSpec, Section
from boxoffice.services.idempotency import encode
from boxoffice.services.pages import Cursor, Page
from boxoffice.services.unit_of_work import UnitOfWork


async def create_event(
    database: Database,
    spec: EventSpec,
    now: datetime,
    *,
    organizer_id: str | None = None,
    idempotency: Idempotency | None = None,
    request_id: str | None = None,
    retry: bool = True,
) -> Event:
    """Store a new event, owned by `organizer_id`, and all its sections in one transaction;
    every seat starts free.

    With an idempotency key, a retry gets the event the first request made.
    """
    event_id = new_id()
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
    event = Event(
        id=str(event_id),
        name=spec.name,
        created_at=now,
        sections=[_section(row) for row in section_rows],
        max_per_customer=spec.max_per_customer,
        organizer_id=organizer_id,
    )
    trail = [
        AuditRecord(now, event.id, s.id, "create", s.capacity, request_id=request_id)
        for s in event.sections
    ]
    try:
        async with UnitOfWork(database, write=True) as uow:
            if idempotency is not None:
                answers, busy = await uow.conn.run_sync(claim_answers, [idempotency.ident])
                if busy:
                    raise IdempotencyInProgress()
                stored = answers.get(idempotency.ident)
                if stored is not None:
                    if stored.fingerprint != idempotency.fingerprint:
                        raise IdempotencyKeyReused()
                    if isinstance(stored.outcome, BoxofficeError):
                        raise stored.outcome
                    assert isinstance(stored.outcome, Event)
                    return stored.outcome
            await uow.conn.execute(
                insert(events),
                [
                    {
                        "id": event_id,
                        "name": spec.name,
                        "created_at": now,
                        "max_per_customer": spec.max_per_customer,
                        "organizer_id": organizer_id,
                    }
                ],
            )
            await uow.conn.execute(insert(sections), section_rows)
            first = None  # PostgreSQL numbers audit records itself; SQLite: write.py
            if database.dialect == "sqlite":
                first = ((await uow.conn.execute(LAST_AUDIT_SEQ)).scalar() or 0) + 1
            await uow.conn.execute(insert(audit_records), audit_rows(trail, now, first))
            if idempotency is not None:
                await uow.conn.execute(
                    insert(idempotency_keys),
                    [
                        {
                            "scope": idempotency.scope,
                            "key": idempotency.key,
                            "fingerprint": idempotency.fingerprint,
                            "outcome": encode(event),
                            "created_at": now,
                        }
                    ],
                )
            await uow.commit()
    except IntegrityError:
        if idempotency is None or not retry:
            raise
        # Another process stored this key between our read and our insert (SQLite
        # cannot: it holds the write lock throughout): its answer is the answer.
        return await create_event(
            database,
            spec,
            now,
            organizer_id=organizer_id,
            idempotency=idempotency,
            request_id=request_id,
            retry=False,
        )
    return event


def sections_as_seen(now: datetime, event_ids: list[uuid.UUID]) -> Any:
    """The events' sections, the seats of expired holds counted as remaining: one statement."""
    expired = (
        select(
            hold_items.c.section_id,
            func.sum(hold_items.c.qty).label("expired"),
        )
        .where(
            hold_items.c.event_id.in_(event_ids),  # only these events' holds are summed
            hold_items.c.active,
            hold_items.c.expires_at <= now,
        )
        .group_by(hold_items.c.section_id)
        .subquery()
    )
    return select(sections, func.coalesce(expired.c.expired, 0).label("expired")).outerjoin(
        expired, expired.c.section_id == sections.c.id
    )


async def managed_event(conn: AsyncConnection, event_id: str, actor: Principal) -> uuid.UUID:
    """The event's id, if `actor` may manage it: someone else's event is not found, as an
    unknown one is (domain/access.py)."""
    ident = parse_id(event_id)
    if ident is None:
        raise EventNotFound(event_id)
    owner = (await conn.execute(select(events.c.organizer_id).where(events.c.id == ident))).first()
    if owner is None or not actor.may_manage_event(owner.organizer_id):
        raise EventNotFound(event_id)
    return ident


async def get_event(database: Database, event_id: str, now: datetime) -> Event:
    """The event with the live seats per section: remaining, held and sold."""
    ident = parse_id(event_id)
    if ident is None:
        raise EventNotFound(event_id)
    async with UnitOfWork(database, write=False) as uow:
        row = (await uow.conn.execute(select(events).where(events.c.id == ident))).first()
        if row is None:
            raise EventNotFound(event_id)
        section_rows = (
            await uow.conn.execute(
                sections_as_seen(now, [ident])
                .where(sections.c.event_id == ident)
                .order_by(sections.c.position)
            )
        ).all()
    return _event(row, section_rows)


async def list_events(
    database: Database, now: datetime, *, limit: int, cursor: Cursor | None
) -> Page[Event]:
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
                sections_as_seen(now, list(by_event))
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
        max_per_customer=row.max_per_customer,
        organizer_id=row.organizer_id,
    )


def _section(row: Any) -> Section:
    expired = int(row.get("expired", 0) or 0)
    return Section(
        id=str(row["id"]),
        event_id=str(row["event_id"]),
        name=row["name"],
        price_cents=row["price_cents"],
        capacity=row["capacity"],
        remaining=row["remaining"] + expired,
        held=row.get("held", 0) - expired,
        sold=row.get("sold", 0),
        version=row.get("version", 0),
    )
