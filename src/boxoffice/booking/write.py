"""Write what a batch decided: every table it touches, in one go, whatever the commands.

The effects (`domain.decisions.Effects`) are already final states and new rows;
this module only turns them into statements, one place per dialect:

- PostgreSQL: ONE statement, a chain of data-modifying CTEs, each over one
  JSON document holding its table's rows (`json_to_recordset`). Its first
  part locks the changed sections in id order and checks that each one's
  remaining covers the most the batch drew from it at any step; every other
  part writes only if all of them do, and the sections' counts are changed
  by what the batch added or took. So the same statement serves the locked
  transaction (the rows are locked, and were decided on as they are) and the
  one-round-trip path that decides on remembered copies that may be stale
  (`booking/remembered.py`), where a section short of seats writes nothing.
- SQLite (in-process, no round trips): one executemany per table that has rows.

Every row is found by its event as well as its id (`event_id` is in every
inventory key, and in every statement's WHERE: docs/scaling.md).

Adding a column is one more key here and one more column in its table; adding
a command adds nothing here. The CHECK constraints still back every count.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy import (
    Connection,
    String,
    Table,
    bindparam,
    case,
    func,
    insert,
    select,
    text,
    update,
)

from boxoffice.booking.load import as_uuid
from boxoffice.db.driver import SqliteStatement
from boxoffice.db.tables import (
    audit_records,
    bookings,
    customer_tickets,
    hold_items,
    holds,
    idempotency_keys,
    sections,
)
from boxoffice.db.types import UTCDateTime
from boxoffice.domain.decisions import Effects
from boxoffice.services.idempotency import encodable, encode

PG_WRITE = text(
    """
    WITH s_new AS (
        -- Per changed section: drawn, the most the batch's remaining fell below the
        -- remaining it was decided on, at any step (the true remaining must cover it);
        -- and what the batch adds to each count (negative: takes away).
        SELECT * FROM json_to_recordset(CAST(:sections AS json))
                   AS t(id uuid, event_id uuid, drawn integer, remaining integer,
                        held integer, sold integer)
    ), s_locked AS (
        -- Row locks in id order, as everywhere: processes cannot deadlock. A row another
        -- transaction changed meanwhile is read as it committed, once it is ours. Each
        -- row carries its own part of s_new, so nothing below joins the two: the write
        -- pool plans with nested loops only (db/database.py), and a join of two CTEs is
        -- then a scan of one per row of the other, quadratic in the batch's size.
        SELECT s.id, s.event_id, s.remaining, s.held, s.sold, s.version, n.drawn,
               n.remaining AS add_remaining, n.held AS add_held, n.sold AS add_sold
          FROM s_new AS n JOIN sections AS s ON s.id = n.id
         WHERE s.event_id = n.event_id
         ORDER BY s.id FOR UPDATE OF s
    ), h_new_status AS (
        SELECT * FROM json_to_recordset(CAST(:settled AS json))
                   AS c(id uuid, event_id uuid, status text, expected text)
    ), h_locked AS (
        -- After the sections (their CTE is evaluated first): the same order as every
        -- locked batch, which locks sections, then writes holds.
        SELECT h.id, h.status, c.expected
          FROM h_new_status AS c JOIN holds AS h ON h.id = c.id
         WHERE h.event_id = c.event_id AND (SELECT count(*) FROM s_locked) >= 0
         ORDER BY h.id FOR UPDATE OF h
    ), a_new AS (
        SELECT * FROM json_to_recordset(CAST(:answers AS json))
                   AS a(scope text, key text, fingerprint text, outcome json)
    ), claimed AS (
        -- The idempotency keys, claimed as the locked path claims them (load.py): a key
        -- another transaction holds means "in progress", decided under lock.
        SELECT COALESCE(bool_and(pg_try_advisory_xact_lock(
                   hashtextextended(a.scope || chr(31) || a.key, 0))), true) AS ok
          FROM (SELECT scope, key FROM a_new ORDER BY scope, key) AS a
    ), checked AS (
        -- Every step of the batch finds its seats in the true count, whatever else
        -- happened to the section meanwhile: each command, in order, had its seats.
        SELECT count(*) FILTER (WHERE l.remaining >= l.drawn)
                   = (SELECT count(*) FROM s_new)
               AND (SELECT count(*) FROM h_locked WHERE status = expected)
                   = (SELECT count(*) FROM h_new_status)
               AND (SELECT ok FROM claimed) AS ok,
               array_agg(CAST(l.id AS text)) FILTER (WHERE l.remaining < l.drawn) AS stale
          FROM s_locked AS l
    ), s_write AS (
        -- Added to the counts as locked above, not as this UPDATE's scan finds them: that
        -- is the statement's snapshot, from before its lock waits, and PostgreSQL checks
        -- the CHECKs on the row made from it before it notices the row changed and makes
        -- it again from the current one (a section given seats back meanwhile failed
        -- ck_sections_seats_add_up; tests/integration/test_group_commit.py).
        UPDATE sections AS s
           SET remaining = l.remaining + l.add_remaining, held = l.held + l.add_held,
               sold = l.sold + l.add_sold, version = l.version + 1
          FROM s_locked AS l
         WHERE s.id = l.id AND s.event_id = l.event_id AND (SELECT ok FROM checked)
     RETURNING s.id, s.remaining, s.held, s.sold, s.version
    ), h_new AS (
        INSERT INTO holds (id, event_id, customer_id, status, expires_at, created_at)
        SELECT h.id, h.event_id, h.customer_id, 'active', h.expires_at, :now
          FROM json_to_recordset(CAST(:holds AS json))
               AS h(id uuid, event_id uuid, customer_id text, expires_at timestamptz)
         WHERE (SELECT ok FROM checked)
    ), i_new AS (
        INSERT INTO hold_items (hold_id, section_id, event_id, position, qty, unit_price_cents,
                                expires_at, active)
        SELECT i.hold_id, i.section_id, i.event_id, i.position, i.qty, i.unit, i.expires_at, true
          FROM json_to_recordset(CAST(:items AS json))
               AS i(hold_id uuid, section_id uuid, event_id uuid, position integer, qty integer,
                    unit bigint, expires_at timestamptz)
         WHERE (SELECT ok FROM checked)
    ), h_write AS (
        UPDATE holds AS h
           SET status = c.status,
               settled_at = CASE WHEN c.status = c.expected THEN h.settled_at ELSE :now END
          FROM h_new_status AS c
         WHERE h.id = c.id AND h.event_id = c.event_id AND (SELECT ok FROM checked)
    ), i_write AS (
        UPDATE hold_items AS i SET active = false
          FROM json_to_recordset(CAST(:freed AS json))
               AS f(hold_id uuid, section_id uuid, event_id uuid)
         WHERE i.hold_id = f.hold_id AND i.section_id = f.section_id AND i.event_id = f.event_id
           AND (SELECT ok FROM checked)
    ), b_new AS (
        INSERT INTO bookings (id, event_id, section_id, qty, unit_price_cents, total_price_cents,
                              status, created_at, customer_id, hold_id, payment_reference)
        SELECT b.id, b.event_id, b.section_id, b.qty, b.unit, b.unit * b.qty, 'confirmed', :now,
               b.customer_id, b.hold_id, b.payment
          FROM json_to_recordset(CAST(:bookings AS json))
               AS b(id uuid, event_id uuid, section_id uuid, qty integer, unit bigint,
                    customer_id text, hold_id uuid, payment text)
         WHERE (SELECT ok FROM checked)
    ), b_write AS (
        UPDATE bookings AS b SET status = 'cancelled', cancelled_at = :now
          FROM json_to_recordset(CAST(:cancelled AS json)) AS c(id uuid, event_id uuid)
         WHERE b.id = c.id AND b.event_id = c.event_id AND (SELECT ok FROM checked)
    ), t_new AS (
        -- Tickets taken: the tally made if need be (a customer's first tickets, decided
        -- from memory), else added to, in key order, as load.py locks them. The CHECK
        -- refuses a customer over its cap, and with it the whole statement (remembered.py
        -- decides it again, locked). It checks the row as proposed too, so tickets given
        -- back (never from memory: their rows exist) are a plain update below.
        INSERT INTO customer_tickets (event_id, customer_id, tickets, max_tickets)
        SELECT t.event_id, t.customer_id, t.delta, t.cap
          FROM json_to_recordset(CAST(:tallies AS json))
               AS t(event_id uuid, customer_id text, delta integer, cap integer)
         WHERE t.delta > 0 AND (SELECT ok FROM checked)
         ORDER BY t.event_id, t.customer_id
        ON CONFLICT (event_id, customer_id)
           DO UPDATE SET tickets = customer_tickets.tickets + excluded.tickets
    ), t_write AS (
        UPDATE customer_tickets AS c SET tickets = c.tickets + t.delta
          FROM json_to_recordset(CAST(:tallies AS json))
               AS t(event_id uuid, customer_id text, delta integer)
         WHERE c.event_id = t.event_id AND c.customer_id = t.customer_id AND t.delta < 0
           AND (SELECT ok FROM checked)
    ), answers AS (
        INSERT INTO idempotency_keys (scope, key, fingerprint, outcome, created_at)
        SELECT a.scope, a.key, a.fingerprint, CAST(a.outcome AS text), :now
          FROM a_new AS a
         WHERE (SELECT ok FROM checked)
    ), trail AS (
        INSERT INTO audit_records (at, event_id, section_id, action, qty, outcome, reason,
                                   customer_id, hold_id, booking_id, request_id)
        SELECT :now, r.event_id, r.section_id, r.action, r.qty, r.outcome, r.reason,
               r.customer_id, r.hold_id, r.booking_id, r.request_id
          FROM json_to_recordset(CAST(:trail AS json))
               AS r(n integer, event_id uuid, section_id uuid, action text, qty integer,
                    outcome text, reason text, customer_id text, hold_id uuid, booking_id uuid,
                    request_id text)
         WHERE (SELECT ok FROM checked)
         ORDER BY r.n
    )
    SELECT COALESCE((SELECT ok FROM checked), true), (SELECT stale FROM checked),
           (SELECT json_agg(json_build_array(CAST(id AS text), remaining, held, sold, version))
              FROM s_write)
    """
)

_EMPTY = "[]"


def _rows(rows: Sequence[dict[str, Any]]) -> str:
    """One JSON document for a table's rows, and one parameter for asyncpg to send,
    instead of an array per column checked element by element. Encoded by pydantic-core
    (already ours, through pydantic): 3 to 6 times as fast as json's C encoder on a
    batch's rows, 5 % of the server's CPU per checkout request, within the noise of the
    throughput (docs/performance.md). Text beyond ASCII goes as UTF-8, not escaped."""
    return to_json(rows).decode() if rows else _EMPTY


def pg_parameters(effects: Effects, now: datetime) -> dict[str, Any]:
    """The parameters of `PG_WRITE`: `now`, and one JSON list of rows per table."""
    return {
        "now": now,
        "sections": _rows(
            [
                {
                    "id": s.id,
                    "event_id": s.event_id,
                    "drawn": effects.drawn[s.id],
                    "remaining": s.remaining - remaining,
                    "held": s.held - held,
                    "sold": s.sold - sold,
                }
                for s in effects.sections.values()
                for remaining, held, sold in (effects.loaded[s.id],)
            ]
        ),
        "holds": _rows(
            [
                {
                    "id": h.id,
                    "event_id": h.event_id,
                    "customer_id": h.customer_id,
                    "expires_at": h.expires_at.isoformat(),
                }
                for h in effects.new_holds
            ]
        ),
        "items": _rows(
            [
                {
                    "hold_id": h.id,
                    "section_id": i.section_id,
                    "event_id": h.event_id,
                    "position": position,
                    "qty": i.qty,
                    "unit": i.unit_price_cents,
                    "expires_at": h.expires_at.isoformat(),
                }
                for h in effects.new_holds
                for position, i in enumerate(h.items)
            ]
        ),
        "settled": _rows(
            [
                {
                    "id": h.id,
                    "event_id": h.event_id,
                    "status": h.status,
                    "expected": effects.hold_statuses[h.id],
                }
                for h in effects.changed_holds.values()
            ]
        ),
        "freed": _rows(
            [
                {"hold_id": hold, "section_id": section, "event_id": event}
                for hold, section, event in effects.freed_items
            ]
        ),
        "bookings": _rows(
            [
                {
                    "id": b.id,
                    "event_id": b.event_id,
                    "section_id": b.section_id,
                    "qty": b.qty,
                    "unit": b.unit_price_cents,
                    "customer_id": b.customer_id,
                    "hold_id": b.hold_id,
                    "payment": b.payment_reference,
                }
                for b in effects.new_bookings
            ]
        ),
        "cancelled": _rows(
            [{"id": b.id, "event_id": b.event_id} for b in effects.changed_bookings.values()]
        ),
        "tallies": _pg_tallies(effects),
        "answers": _rows(
            [
                {
                    "scope": key.scope,
                    "key": key.key,
                    "fingerprint": key.fingerprint,
                    "outcome": encodable(outcome),  # stored as its JSON text
                }
                for key, outcome in effects.answers
            ]
        ),
        "trail": _rows(
            [
                {
                    "n": n,
                    "event_id": r.event_id,
                    "section_id": r.section_id,
                    "action": r.action,
                    "qty": r.qty,
                    "outcome": r.outcome,
                    "reason": r.reason,
                    "customer_id": r.customer_id,
                    "hold_id": r.hold_id,
                    "booking_id": r.booking_id,
                    "request_id": r.request_id,
                }
                for n, r in enumerate(effects.audit)
            ]
        ),
    }


def _pg_tallies(effects: Effects) -> str:
    changes = _tally_changes(effects)
    if not changes:  # most batches: no capped customer
        return _EMPTY
    # A tally changes only with seats of its event's sections, so they name its cap.
    caps = {s.event_id: s.max_per_customer for s in effects.sections.values()}
    return _rows(
        [
            {"event_id": event, "customer_id": customer, "delta": delta, "cap": caps.get(event)}
            for (event, customer), delta in changes
        ]
    )


def _tally_changes(effects: Effects) -> list[tuple[tuple[str, str], int]]:
    """Tickets added to or taken from each customer's tally."""
    return [(key, delta) for key, delta in sorted(effects.tally_changes.items()) if delta]


class LostUpdate(RuntimeError):
    """A row the batch decided on changed under it (a hold another transaction expired
    meanwhile): nothing was written, and the batch is decided again (`locked.py`)."""


def write_effects(conn: Connection, effects: Effects, now: datetime) -> None:
    """Write `effects` inside the caller's transaction, which holds the rows' locks."""
    if not effects:
        return
    if conn.dialect.name == "postgresql":
        ok, stale, _ = conn.execute(PG_WRITE, pg_parameters(effects, now)).one()
        if not ok:
            raise LostUpdate(f"rows changed under the batch (stale sections: {stale})")
        return
    _write_sqlite(conn, effects, now)


# SQLite ---------------------------------------------------------------------------------
# Run on sqlite3 itself (`db/driver.py`): the writer process runs these thousands of times
# a second, and SQLAlchemy's execution layer was a fifth of its CPU (docs/performance.md).

_S_WRITE = SqliteStatement(
    update(sections)
    .where(
        sections.c.id == bindparam("s_id"),
        sections.c.event_id == bindparam("s_event"),
        sections.c.version == bindparam("s_expected"),
    )
    .values(
        remaining=bindparam("s_remaining"),
        held=bindparam("s_held"),
        sold=bindparam("s_sold"),
        version=sections.c.version + 1,
    )
)
_H_WRITE = SqliteStatement(
    update(holds)
    .where(
        holds.c.id == bindparam("h_id"),
        holds.c.event_id == bindparam("h_event"),
        holds.c.status == bindparam("h_expected"),
    )
    .values(
        status=bindparam("h_status"),
        # An expired hold's seats coming back later leave its settled_at alone.
        settled_at=case(
            (
                bindparam("h_status", type_=String) == bindparam("h_expected", type_=String),
                holds.c.settled_at,
            ),
            else_=bindparam("h_at", type_=UTCDateTime),
        ),
    )
)
_I_WRITE = SqliteStatement(
    update(hold_items)
    .where(
        hold_items.c.hold_id == bindparam("f_hold"),
        hold_items.c.section_id == bindparam("f_section"),
        hold_items.c.event_id == bindparam("f_event"),
    )
    .values(active=False)
)
_B_WRITE = SqliteStatement(
    update(bookings)
    .where(bookings.c.id == bindparam("b_id"), bookings.c.event_id == bindparam("b_event"))
    .values(status="cancelled", cancelled_at=bindparam("b_at", type_=UTCDateTime))
)
_T_WRITE = SqliteStatement(  # SQLite decides under lock only: load.py made the row
    update(customer_tickets)
    .where(
        customer_tickets.c.event_id == bindparam("t_event"),
        customer_tickets.c.customer_id == bindparam("t_customer"),
    )
    .values(tickets=customer_tickets.c.tickets + bindparam("t_delta"))
)


def _inserting(table: Table) -> SqliteStatement:
    """`INSERT INTO table` of every column, each row a dict keyed by column."""
    return SqliteStatement(insert(table), column_keys=[column.key for column in table.c])


_HOLDS_NEW = _inserting(holds)
_ITEMS_NEW = _inserting(hold_items)
_BOOKINGS_NEW = _inserting(bookings)
_ANSWERS_NEW = _inserting(idempotency_keys)
_AUDIT_NEW = _inserting(audit_records)
# SQLite: `audit_records.seq` shares the primary key with `event_id`, so it is not the
# rowid: each transaction numbers its records on from the largest, as SQLite numbers
# rowids (one probe of the key's index per transaction; every SQLite writer holds the
# write lock, so no two take one number). PostgreSQL numbers them from its sequence.
LAST_AUDIT_SEQ = select(func.max(audit_records.c.seq))
_LAST_AUDIT_SEQ = SqliteStatement(LAST_AUDIT_SEQ)


@functools.lru_cache(maxsize=4096)
def _maybe_uuid(value: str | None) -> uuid.UUID | None:
    return None if value is None else as_uuid(value)


def _write_sqlite(conn: Connection, effects: Effects, now: datetime) -> None:
    if effects.sections:
        rows = [
            {
                "s_id": as_uuid(s.id),
                "s_event": as_uuid(s.event_id),
                "s_expected": effects.versions[s.id],
                "s_remaining": s.remaining,
                "s_held": s.held,
                "s_sold": s.sold,
            }
            for s in effects.sections.values()
        ]
        if _S_WRITE.run_many(conn, rows) != len(rows):
            raise LostUpdate("sections changed under the batch's write lock")
    if effects.new_holds:
        _HOLDS_NEW.run_many(
            conn,
            [
                {
                    "id": uuid.UUID(h.id),
                    "event_id": as_uuid(h.event_id),
                    "customer_id": h.customer_id,
                    "status": "active",
                    "expires_at": h.expires_at,
                    "created_at": now,
                    "settled_at": None,
                }
                for h in effects.new_holds
            ],
        )
        _ITEMS_NEW.run_many(
            conn,
            [
                {
                    "hold_id": uuid.UUID(h.id),
                    "section_id": as_uuid(i.section_id),
                    "event_id": as_uuid(h.event_id),
                    "position": position,
                    "qty": i.qty,
                    "unit_price_cents": i.unit_price_cents,
                    "expires_at": h.expires_at,
                    "active": True,
                }
                for h in effects.new_holds
                for position, i in enumerate(h.items)
            ],
        )
    if effects.changed_holds:
        rows = [
            {
                "h_id": uuid.UUID(h.id),
                "h_event": as_uuid(h.event_id),
                "h_status": h.status,
                "h_expected": effects.hold_statuses[h.id],
                "h_at": now,
            }
            for h in effects.changed_holds.values()
        ]
        if _H_WRITE.run_many(conn, rows) != len(rows):
            raise LostUpdate("holds changed under the batch's write lock")
    if effects.freed_items:
        _I_WRITE.run_many(
            conn,
            [
                {
                    "f_hold": uuid.UUID(hold),
                    "f_section": as_uuid(section),
                    "f_event": as_uuid(event),
                }
                for hold, section, event in effects.freed_items
            ],
        )
    if effects.new_bookings:
        _BOOKINGS_NEW.run_many(
            conn,
            [
                {
                    "id": uuid.UUID(b.id),
                    "event_id": as_uuid(b.event_id),
                    "section_id": as_uuid(b.section_id),
                    "qty": b.qty,
                    "unit_price_cents": b.unit_price_cents,
                    "total_price_cents": b.total_price_cents,
                    "status": "confirmed",
                    "created_at": now,
                    "customer_id": b.customer_id,
                    "hold_id": _maybe_uuid(b.hold_id),
                    "payment_reference": b.payment_reference,
                    "cancelled_at": None,
                }
                for b in effects.new_bookings
            ],
        )
    if effects.changed_bookings:
        _B_WRITE.run_many(
            conn,
            [
                {"b_id": uuid.UUID(b.id), "b_event": as_uuid(b.event_id), "b_at": now}
                for b in effects.changed_bookings.values()
            ],
        )
    tallies = _tally_changes(effects)
    if tallies:
        _T_WRITE.run_many(
            conn,
            [
                {"t_event": as_uuid(event), "t_customer": customer, "t_delta": delta}
                for (event, customer), delta in tallies
            ],
        )
    if effects.answers:
        _ANSWERS_NEW.run_many(
            conn,
            [
                {
                    "scope": key.scope,
                    "key": key.key,
                    "fingerprint": key.fingerprint,
                    "outcome": encode(outcome),
                    "created_at": now,
                }
                for key, outcome in effects.answers
            ],
        )
    if effects.audit:
        first = (_LAST_AUDIT_SEQ.execute(conn, {})[0][0] or 0) + 1
        _AUDIT_NEW.run_many(conn, audit_rows(effects.audit, now, first))


def audit_rows(
    records: Sequence[Any], now: datetime, first_seq: int | None = None
) -> list[dict[str, Any]]:
    """Audit records as rows for SQLAlchemy's `insert(audit_records)`; numbered from
    `first_seq` when given (SQLite, see above)."""
    rows = [
        {
            "at": now,
            "event_id": as_uuid(r.event_id),
            "section_id": _maybe_uuid(r.section_id),
            "action": r.action,
            "qty": r.qty,
            "outcome": r.outcome,
            "reason": r.reason,
            "customer_id": r.customer_id,
            "hold_id": _maybe_uuid(r.hold_id),
            "booking_id": _maybe_uuid(r.booking_id),
            "request_id": r.request_id,
        }
        for r in records
    ]
    if first_seq is not None:
        for seq, row in enumerate(rows, start=first_seq):
            row["seq"] = seq
    return rows
