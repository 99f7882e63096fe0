"""The audit trail: read it back page by page, and check the inventory against it.

`verify` rebuilds every section's remaining, held and sold counts from the
trail alone (its totals per section and action, replayed through the moves
in `domain/audit.py`) and compares them with the stored rows. It reads both
in one snapshot (REPEATABLE READ on PostgreSQL, one read transaction on
SQLite), so batches committing meanwhile cannot make it report a difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.db.database import Database
from boxoffice.db.tables import audit_records, sections
from boxoffice.domain.access import Principal
from boxoffice.domain.audit import AuditRecord, Counts, rebuild
from boxoffice.domain.errors import EventNotFound
from boxoffice.domain.ids import parse_id
from boxoffice.services.events import managed_event
from boxoffice.services.pages import Page, SeqCursor
from boxoffice.services.unit_of_work import UnitOfWork


async def list_audit(
    database: Database,
    event_id: str,
    *,
    viewer: Principal,
    limit: int,
    cursor: SeqCursor | None,
) -> Page[AuditRecord]:
    """One page of an event's trail, in the order it was written (oldest first); an event
    `viewer` does not manage is not found."""
    ident = parse_id(event_id)
    if ident is None:
        raise EventNotFound(event_id)
    query = (
        select(audit_records)
        .where(audit_records.c.event_id == ident)
        .order_by(audit_records.c.seq)
        .limit(limit + 1)
    )
    if cursor is not None:
        query = query.where(audit_records.c.seq > cursor.seq)
    async with UnitOfWork(database, write=False) as uow:
        await managed_event(uow.conn, event_id, viewer)
        rows = (await uow.conn.execute(query)).all()
    page = rows[:limit]
    next_cursor = SeqCursor(page[-1].seq).encode() if len(rows) > limit else None
    return Page([_record(row) for row in page], next_cursor)


def _record(row: object) -> AuditRecord:
    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return AuditRecord(
        at=row.at,  # type: ignore[attr-defined]
        event_id=str(row.event_id),  # type: ignore[attr-defined]
        section_id=text(row.section_id),  # type: ignore[attr-defined]
        action=row.action,  # type: ignore[attr-defined]
        qty=row.qty,  # type: ignore[attr-defined]
        outcome=row.outcome,  # type: ignore[attr-defined]
        reason=row.reason,  # type: ignore[attr-defined]
        customer_id=row.customer_id,  # type: ignore[attr-defined]
        hold_id=text(row.hold_id),  # type: ignore[attr-defined]
        booking_id=text(row.booking_id),  # type: ignore[attr-defined]
        request_id=row.request_id,  # type: ignore[attr-defined]
        seq=row.seq,  # type: ignore[attr-defined]
    )


@dataclass(frozen=True, slots=True)
class Mismatch:
    section_id: str
    stored: tuple[int, int, int]  # remaining, held, sold
    rebuilt: tuple[int, int, int]


async def rebuilt_counts(conn: AsyncConnection) -> dict[str, Counts]:
    """Every section's counts as the trail alone rebuilds them (its totals per section and
    action, replayed through the moves in `domain/audit.py`)."""
    totals = (
        select(
            audit_records.c.section_id,
            audit_records.c.action,
            func.sum(audit_records.c.qty).label("qty"),
        )
        .where(audit_records.c.outcome == "ok", audit_records.c.section_id.is_not(None))
        .group_by(audit_records.c.section_id, audit_records.c.action)
    )
    return rebuild(
        AuditRecord(
            at=None,  # type: ignore[arg-type]
            event_id="",
            section_id=str(row.section_id),
            action=row.action,
            qty=int(row.qty),
        )
        for row in await conn.execute(totals)
    )


async def verify(database: Database) -> tuple[int, list[Mismatch]]:
    """(sections checked, those whose stored counts differ from the trail's)."""
    async with UnitOfWork(database, write=False, snapshot=True) as uow:
        rebuilt = await rebuilt_counts(uow.conn)
        stored = (
            await uow.conn.execute(
                select(sections.c.id, sections.c.remaining, sections.c.held, sections.c.sold)
            )
        ).all()
    mismatches = []
    for row in stored:
        ident = str(row.id)
        counts = (row.remaining, row.held, row.sold)
        expected = rebuilt.pop(ident, Counts()).as_tuple()
        if counts != expected:
            mismatches.append(Mismatch(ident, counts, expected))
    for ident, orphan in rebuilt.items():  # a trail for a section that is not stored
        mismatches.append(Mismatch(ident, (0, 0, 0), orphan.as_tuple()))
    return len(stored), mismatches
