"""Take seats for many booking requests in one transaction, first come first served.

Statements per batch, whatever its size:

1. `SELECT … FROM sections WHERE id IN (…) ORDER BY id FOR UPDATE`: one row
   lock per section (PostgreSQL; SQLite already holds its write lock), taken in
   id order so two processes locking overlapping sections cannot deadlock.
2. The domain decides, in arrival order: `Section.reserve(qty)` either takes
   the seats or raises `InsufficientSeats`. A later request can only take seats
   that every earlier one in the batch has already been given or refused.
3. The writes. On PostgreSQL, one statement: a data-modifying CTE that
   decrements every section from `unnest(ids, taken)` and inserts every
   booking from `unnest(...)` arrays, so PostgreSQL plans and runs one
   statement per batch instead of one per row. On SQLite (in-process, no round
   trips) an executemany UPDATE and an executemany INSERT. Either way the
   CHECK constraint still backs the decrement.

The caller commits. Every request gets its own outcome: a `Booking`, or the
domain error that refused it.

The code is synchronous on purpose: SQLite's committer runs it whole on its
writer (a process of its own; `db/sqlite_writer.py`), in one hop from the
event loop, and PostgreSQL's runs it through `AsyncConnection.run_sync`, where
each statement is awaited on asyncpg. So it must stay a module-level function
whose arguments and results pickle.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, text, update

from boxoffice.db.tables import bookings, events, sections
from boxoffice.domain.errors import BoxofficeError, EventNotFound, SectionNotFound
from boxoffice.domain.model import Booking, BookingRequest, Section
from boxoffice.services.ids import canonical_id, new_ids

Outcome = Booking | BoxofficeError
# A request's event and section ids in canonical form (lower-case, hyphenated), or None
# where the client's string is not a UUID. Strings, not `uuid.UUID`s: the committer hashes,
# compares and sorts them many times per booking, and a UUID does each in Python.
Target = tuple[str | None, str | None]

# Built once: SQLAlchemy then reuses the compiled form from its cache.
_LOCK_SECTIONS = (
    select(
        sections.c.id,
        sections.c.event_id,
        sections.c.name,
        sections.c.price_cents,
        sections.c.capacity,
        sections.c.remaining,
    )
    .where(sections.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(sections.c.id)
    .with_for_update()
)
_TAKE_SEATS = (
    update(sections)
    .where(sections.c.id == bindparam("section_id"))
    .values(remaining=sections.c.remaining - bindparam("taken"))
)
_RECORD_BOOKINGS = insert(bookings)

# PostgreSQL: a batch's bookings inserted from the arrays of `booking_columns`, in one
# statement; both one-statement paths (here and `remembered.py`) build on it.
PG_INSERT_BOOKINGS = """
    INSERT INTO bookings (id, event_id, section_id, qty, unit_price_cents, total_price_cents,
                          status, created_at)
    SELECT b.id, b.event_id, b.section_id, b.qty, b.unit, b.unit * b.qty, 'confirmed',
           CAST(:created_at AS timestamptz)
      FROM unnest(CAST(:booking_ids AS uuid[]), CAST(:event_ids AS uuid[]),
                  CAST(:booked_sections AS uuid[]), CAST(:qtys AS integer[]),
                  CAST(:units AS bigint[])) AS b(id, event_id, section_id, qty, unit)
"""
_PG_TAKE_SEATS_AND_RECORD = text(
    f"""
    WITH taken AS (
        UPDATE sections AS s SET remaining = s.remaining - t.taken
          FROM unnest(CAST(:section_ids AS uuid[]), CAST(:taken AS integer[])) AS t(id, taken)
         WHERE s.id = t.id
    )
    {PG_INSERT_BOOKINGS}
    """
)


@dataclass(slots=True)
class Decisions:
    """What one batch does, decided in arrival order before anything is written."""

    outcomes: list[Outcome | None]  # None: the event or section is unknown
    taken: dict[str, int]  # seats taken per section, 0 for refusals only
    new_bookings: list[Booking]  # in arrival order

    def section_ids(self) -> list[str]:
        """The sections that give up seats, in id order: the order their rows are locked."""
        return sorted(ident for ident, qty in self.taken.items() if qty)


# In a sale the same few event and section ids arrive thousands of times a second:
# each is parsed once. Bounded, so arbitrary client strings cannot grow it.
_target_id = functools.lru_cache(maxsize=4096)(canonical_id)


@functools.lru_cache(maxsize=4096)
def _as_uuid(canonical: str) -> uuid.UUID:
    """For SQLAlchemy's `Uuid` columns, which bind `uuid.UUID`s."""
    return uuid.UUID(canonical)


def target_ids(requests: Sequence[BookingRequest]) -> list[Target]:
    return [(_target_id(r.event_id), _target_id(r.section_id)) for r in requests]


def decide(
    requests: Sequence[BookingRequest],
    targets: Sequence[Target],
    found: Mapping[str, Section],
    now: datetime,
) -> Decisions:
    """First come, first served: each request takes its seats or is refused, in order.

    Plain Python over the domain's `Section.reserve`; `found` is changed in place.
    """
    decisions = Decisions([], {}, [])
    ids = iter(new_ids(len(requests)))
    for request, (event_id, section_id) in zip(requests, targets, strict=True):
        section = found.get(section_id) if section_id is not None else None
        if event_id is None or section is None or section.event_id != event_id:
            decisions.outcomes.append(None)
            continue
        assert section_id is not None
        decisions.taken.setdefault(section_id, 0)
        try:
            section.reserve(request.qty)
        except BoxofficeError as refused:
            decisions.outcomes.append(refused)
            continue
        decisions.taken[section_id] += request.qty
        # The section's own ids, as the database spells them, not the client's.
        booking = Booking(
            next(ids), section.event_id, section.id, request.qty, section.price_cents, now
        )
        decisions.new_bookings.append(booking)
        decisions.outcomes.append(booking)
    return decisions


def reserve_batch(
    conn: Connection, requests: Sequence[BookingRequest], now: datetime
) -> tuple[list[Outcome], dict[str, Section]]:
    """Book `requests` in order inside the caller's transaction; one outcome per request.

    Also returns the locked sections as they will be after the commit, so the
    caller can remember them (see `booking/remembered.py`).
    """
    targets = target_ids(requests)
    wanted = sorted({section for _, section in targets if section is not None})
    found: dict[str, Section] = {}
    if wanted:
        rows = conn.execute(_LOCK_SECTIONS, {"ids": [_as_uuid(ident) for ident in wanted]})
        for row in rows:
            section = Section(
                str(row.id),
                str(row.event_id),
                row.name,
                row.price_cents,
                row.capacity,
                row.remaining,
            )
            found[section.id] = section
    decisions = decide(requests, targets, found, now)
    if decisions.new_bookings:
        _write(conn, decisions, now)
    outcomes = decisions.outcomes
    if None in outcomes:
        explain_unknown(conn, requests, targets, outcomes)
    return settled(outcomes), found


def settled(outcomes: list[Outcome | None]) -> list[Outcome]:
    result: list[Outcome] = []
    for outcome in outcomes:
        assert outcome is not None, "every request has an outcome"
        result.append(outcome)
    return result


def _write(conn: Connection, decisions: Decisions, now: datetime) -> None:
    section_ids = decisions.section_ids()
    if conn.dialect.name == "postgresql":
        conn.execute(
            _PG_TAKE_SEATS_AND_RECORD,
            {
                "section_ids": section_ids,
                "taken": [decisions.taken[ident] for ident in section_ids],
                **booking_columns(decisions.new_bookings, now),
            },
        )
        return
    conn.execute(
        _TAKE_SEATS,
        [{"section_id": _as_uuid(ident), "taken": decisions.taken[ident]} for ident in section_ids],
    )
    conn.execute(
        _RECORD_BOOKINGS,
        [
            {
                "id": uuid.UUID(booking.id),
                "event_id": _as_uuid(booking.event_id),
                "section_id": _as_uuid(booking.section_id),
                "qty": booking.qty,
                "unit_price_cents": booking.unit_price_cents,
                "total_price_cents": booking.total_price_cents,
                "status": booking.status,
                "created_at": now,
            }
            for booking in decisions.new_bookings
        ],
    )


def booking_columns(new_bookings: Sequence[Booking], now: datetime) -> dict[str, Any]:
    """The parameters of `PG_INSERT_BOOKINGS`: one array per column.

    Ids go as canonical strings, which asyncpg encodes in C; a `uuid.UUID` costs a
    Python-level `.bytes` each.
    """
    return {
        "booking_ids": [b.id for b in new_bookings],
        "event_ids": [b.event_id for b in new_bookings],
        "booked_sections": [b.section_id for b in new_bookings],
        "qtys": [b.qty for b in new_bookings],
        "units": [b.unit_price_cents for b in new_bookings],
        "created_at": now,
    }


def explain_unknown(
    conn: Connection,
    requests: Sequence[BookingRequest],
    keys: Sequence[Target],
    outcomes: list[Outcome | None],
) -> None:
    """Fill in 404s: the event is unknown, or the section is not one of its sections."""
    event_ids = {
        event
        for (event, _), outcome in zip(keys, outcomes, strict=True)
        if outcome is None and event is not None
    }
    query = select(events.c.id).where(events.c.id.in_([_as_uuid(e) for e in event_ids]))
    existing = {str(found) for found in conn.execute(query).scalars()} if event_ids else set()
    for index, outcome in enumerate(outcomes):
        if outcome is not None:
            continue
        request, event_id = requests[index], keys[index][0]
        outcomes[index] = (
            SectionNotFound(request.event_id, request.section_id)
            if event_id in existing
            else EventNotFound(request.event_id)
        )
