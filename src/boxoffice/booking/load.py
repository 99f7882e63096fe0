"""Load what a batch of commands touches, locked, as an `Inventory` to decide on.

Every statement names the event of each row it reads (`event_id IN (…)` next
to the ids), as a database distributed by event needs (docs/scaling.md):
bookings and holds name their event; confirm, release and cancel carry the
event of their hold or booking, learnt before the transaction
(`booking/events_of.py`). Statements, each only when some command needs it:

1. `SELECT … FROM sections JOIN events … ORDER BY id FOR UPDATE`: one row lock
   per section, in id order, so two processes locking overlapping sections
   cannot deadlock (SQLite holds its write lock already). The sections are
   those the commands name, and those of the holds and bookings that confirm,
   release and cancel name, found in the same statement (an item's or a
   booking's section never changes). The sweeper skips rows another
   transaction holds (`SKIP LOCKED`): that transaction gives the expired seats
   back itself.
2. The holds (with their items, one query) and bookings named, as they are
   now. Every change to a hold or a booking moves seats, so it happens under
   the lock of its sections: once those are locked, what is read here stays
   true until the commit.
3. Each capped customer's tally (`customer_tickets`), made or locked in one
   upsert.
4. Idempotency keys: on PostgreSQL a transaction-scoped advisory lock per key
   first (a key another transaction holds is "in progress"), then the answers
   stored for them.
5. The events named by commands whose section was not found, to tell an
   unknown event from a section of another event.

`load_expired` adds the expired holds that still keep seats in the locked
sections, or tickets of a capped customer in the batch: only needed when a
command was refused for want of them.

Under a sale's load each statement is a round trip that waits its turn in a busy
event loop, so they are as few as the rules allow (tests/integration/test_round_trips.py).

Synchronous, like the rest of the transaction (see `booking/transaction.py`).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, or_, select, text, union
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from boxoffice.db.driver import SqliteStatement
from boxoffice.db.rows import booking_from_row, holds_from_rows, section_from_row
from boxoffice.db.tables import (
    bookings,
    customer_tickets,
    events,
    hold_items,
    holds,
    idempotency_keys,
    sections,
)
from boxoffice.domain.commands import (
    Book,
    CancelBooking,
    Command,
    ConfirmHold,
    PlaceHold,
    ReleaseHold,
    SweepExpired,
)
from boxoffice.domain.decisions import Inventory, StoredAnswer, Tally
from boxoffice.domain.ids import cached_canonical_id
from boxoffice.domain.model import Section
from boxoffice.services.idempotency import decode

_SECTION_COLUMNS = (
    sections.c.id,
    sections.c.event_id,
    sections.c.name,
    sections.c.price_cents,
    sections.c.capacity,
    sections.c.remaining,
    sections.c.held,
    sections.c.sold,
    sections.c.version,
    events.c.max_per_customer,
    events.c.organizer_id,
)
Named = set[tuple[str, str]]  # (event id, row id), canonical


def _in_events(event_id: ColumnElement[Any], ident: ColumnElement[Any]) -> ColumnElement[bool]:
    """`event_id IN :events AND ident IN :ids`: the rows named, by event and id.

    Two lists rather than (event, id) pairs: one statement, compiled once. Their
    product can also find a row named with the wrong event when the batch names its
    right one too (a section of one event named with another): it is read, or
    locked, in an event the batch touches anyway, and the command that named it
    with the wrong event is refused as before (`domain/decisions.section_of`).
    """
    return and_(
        event_id.in_(bindparam("events", expanding=True)),
        ident.in_(bindparam("ids", expanding=True)),
    )


_SECTIONS = (
    select(*_SECTION_COLUMNS)
    .join_from(sections, events, events.c.id == sections.c.event_id)
    .where(_in_events(sections.c.event_id, sections.c.id))
    .order_by(sections.c.id)
)
# Every statement of a batch's load runs on sqlite3 itself on SQLite's writer, where they
# run thousands of times a second, and through SQLAlchemy elsewhere (`db/driver.py`).
_LOCK_SECTIONS = SqliteStatement(_SECTIONS.with_for_update(of=sections))
_LOCK_FREE_SECTIONS = SqliteStatement(_SECTIONS.with_for_update(of=sections, skip_locked=True))


def _by_event(
    event_id: ColumnElement[Any], ident: ColumnElement[Any], prefix: str
) -> ColumnElement[bool]:
    """`_in_events` with parameters of their own (`<prefix>_events`, `<prefix>_ids`)."""
    return and_(
        event_id.in_(bindparam(f"{prefix}_events", expanding=True)),
        ident.in_(bindparam(f"{prefix}_ids", expanding=True)),
    )


# The sections a batch names, and those of the holds and bookings it names, locked in one
# round trip: their items' sections never change, so they may be read in the same
# statement that locks them (a hold's state is read after, under those locks). A batch
# that names no hold or booking locks with the plain statement above (cheaper on SQLite).
_NAMED = union(
    select(sections.c.event_id, sections.c.id).where(
        _in_events(sections.c.event_id, sections.c.id)
    ),
    select(hold_items.c.event_id, hold_items.c.section_id).where(
        _by_event(hold_items.c.event_id, hold_items.c.hold_id, "hold")
    ),
    select(bookings.c.event_id, bookings.c.section_id).where(
        _by_event(bookings.c.event_id, bookings.c.id, "booking")
    ),
).subquery("named")
_LOCK_SECTIONS_WITH_THEIRS = SqliteStatement(
    select(*_SECTION_COLUMNS)
    .join_from(sections, events, events.c.id == sections.c.event_id)
    .join(_NAMED, and_(_NAMED.c.event_id == sections.c.event_id, _NAMED.c.id == sections.c.id))
    .where(sections.c.event_id.in_(bindparam("all_events", expanding=True)))
    .order_by(sections.c.id)
    .with_for_update(of=sections)
)
# Holds with their items, a row per item: one round trip. Every hold has an item (a
# PlaceHold without one is refused before it is queued), so an inner join finds it.
_HOLDS = SqliteStatement(
    select(
        holds,
        events.c.max_per_customer,
        # the item's own columns, none of them a hold's (hold_item_from_row reads them)
        hold_items.c.position,
        hold_items.c.section_id,
        hold_items.c.qty,
        hold_items.c.unit_price_cents,
        hold_items.c.active,
    )
    .join_from(holds, events, events.c.id == holds.c.event_id)
    .join(
        hold_items,
        and_(hold_items.c.hold_id == holds.c.id, hold_items.c.event_id == holds.c.event_id),
    )
    .where(
        _in_events(holds.c.event_id, holds.c.id),
        _in_events(hold_items.c.event_id, hold_items.c.hold_id),  # each table names its event
    )
)
_BOOKINGS = SqliteStatement(
    select(bookings, events.c.max_per_customer)
    .join_from(bookings, events, events.c.id == bookings.c.event_id)
    .where(_in_events(bookings.c.event_id, bookings.c.id))
)
_EXPIRED_IN_SECTIONS = SqliteStatement(
    select(hold_items.c.event_id, hold_items.c.hold_id)
    .where(
        _in_events(hold_items.c.event_id, hold_items.c.section_id),
        hold_items.c.active,
        hold_items.c.expires_at <= bindparam("now"),
    )
    .distinct()
)
_EVENTS = SqliteStatement(
    select(events.c.id).where(events.c.id.in_(bindparam("ids", expanding=True)))
)


# A capped customer's tally, made (0 tickets) or locked as it is, in the index's order.
_PG_TALLIES = text(
    """
    INSERT INTO customer_tickets (event_id, customer_id, tickets, max_tickets)
    SELECT t.event_id, t.customer_id, 0, t.cap
      FROM json_to_recordset(CAST(:tallies AS json))
           AS t(event_id uuid, customer_id text, cap integer)
     ORDER BY t.event_id, t.customer_id
    ON CONFLICT (event_id, customer_id) DO UPDATE SET tickets = customer_tickets.tickets
    RETURNING event_id, customer_id, tickets
    """
)
_PG_CLAIM_KEYS = text(
    "SELECT k, pg_try_advisory_xact_lock(hashtextextended(k, 0)) "
    "FROM unnest(CAST(:keys AS text[])) AS k"
)


@functools.lru_cache(maxsize=4096)
def as_uuid(canonical: str) -> uuid.UUID:
    """For SQLAlchemy's `Uuid` columns, which bind `uuid.UUID`s."""
    return uuid.UUID(canonical)


def _uuids(ids: Iterable[str]) -> list[uuid.UUID]:
    return [as_uuid(ident) for ident in sorted(ids)]


def _named(named: Named) -> dict[str, list[uuid.UUID]]:
    """The parameters of `_in_events` for these (event, id) pairs."""
    return {
        "events": _uuids({event for event, _ in named}),
        "ids": _uuids({ident for _, ident in named}),
    }


def _pairs(rows: Iterable[Any]) -> Named:
    """(event id, id) rows as canonical strings."""
    return {(str(event), str(ident)) for event, ident in rows}


def pairs_in(
    first: ColumnElement[Any],
    second: ColumnElement[Any],
    pairs: Iterable[tuple[str, str]],
    first_value: Callable[[str], Any],
) -> ColumnElement[bool]:
    """`(first, second) IN pairs`, spelt so that SQLite uses the two-column index.

    SQLite does not look a row value list up in an index (it scanned every stored
    idempotency key per batch); grouped by the first column it is one index range per
    distinct first value, and a batch has few of those (one scope, one event).
    """
    grouped: dict[str, list[str]] = {}
    for one, two in sorted(set(pairs)):
        grouped.setdefault(one, []).append(two)
    return or_(
        *((first == first_value(one)) & second.in_(seconds) for one, seconds in grouped.items())
    )


def load_inventory(conn: Connection, commands: Sequence[Command], now: datetime) -> Inventory:
    """Everything `commands` touch, locked where it will change, as stored now."""
    inventory = Inventory()
    wanted = _named_sections(commands)
    hold_ids = _named_by_id(c for c in commands if isinstance(c, ConfirmHold | ReleaseHold))
    booking_ids = _named_by_id(c for c in commands if isinstance(c, CancelBooking))
    sweeping = bool(commands) and all(isinstance(c, SweepExpired) for c in commands)
    rows: Iterable[Any] = ()
    if sweeping:
        if wanted:
            rows = _LOCK_FREE_SECTIONS.execute(conn, _named(wanted))
    elif hold_ids or booking_ids:
        named_holds, named_bookings = _named(hold_ids), _named(booking_ids)
        rows = _LOCK_SECTIONS_WITH_THEIRS.execute(
            conn,
            {
                **_named(wanted),
                "hold_events": named_holds["events"],
                "hold_ids": named_holds["ids"],
                "booking_events": named_bookings["events"],
                "booking_ids": named_bookings["ids"],
                "all_events": _uuids({event for event, _ in wanted | hold_ids | booking_ids}),
            },
        )
    elif wanted:
        rows = _LOCK_SECTIONS.execute(conn, _named(wanted))
    for row in rows:
        section = section_from_row(row)
        inventory.sections[section.id] = section
    limits: dict[str, int] = {}
    if hold_ids:
        limits.update(_load_holds(conn, inventory, hold_ids))
    if booking_ids:
        for row in _BOOKINGS.execute(conn, _named(booking_ids)):
            booking = booking_from_row(row)
            inventory.bookings[booking.id] = booking
            if row.max_per_customer is not None:
                limits[booking.event_id] = row.max_per_customer
    if sweeping:
        limits.update(_load_expired_in(conn, inventory, inventory.sections, now))
    _load_tallies(conn, inventory, commands, limits)
    _load_answers(conn, inventory, commands)
    _load_events(conn, inventory, commands)
    return inventory


def load_expired(
    conn: Connection, inventory: Inventory, commands: Sequence[Command], now: datetime
) -> bool:
    """Add the expired holds that keep seats or tickets the batch could use; True if any."""
    before = len(inventory.holds)
    limits = _load_expired_in(conn, inventory, inventory.sections, now)
    customers = {
        (section.event_id, command.customer_id)
        for command in commands
        if isinstance(command, Book | PlaceHold) and command.customer_id is not None
        for section in _sections_of(command, inventory)
        if section.max_per_customer is not None
    }
    if customers:
        query = select(holds.c.event_id, holds.c.id).where(
            pairs_in(holds.c.event_id, holds.c.customer_id, customers, as_uuid),
            holds.c.status == "active",
            holds.c.expires_at <= now,
        )
        found = {pair for pair in _pairs(conn.execute(query)) if pair[1] not in inventory.holds}
        if found:
            limits.update(_load_holds(conn, inventory, found))
    _load_tallies(conn, inventory, [], limits)
    return len(inventory.holds) > before


def _named_sections(commands: Sequence[Command]) -> Named:
    """The sections that bookings, holds and sweeps name, with the event named with them
    (a section named with another event is not loaded: it is not found there)."""
    named: Named = set()
    for command in commands:
        if isinstance(command, Book | PlaceHold):
            event = cached_canonical_id(command.event_id)
            if event is None:
                continue
            for name in command.section_names:
                ident = cached_canonical_id(name)
                if ident is not None:
                    named.add((event, ident))
        elif isinstance(command, SweepExpired):
            for event_id, section_id in command.sections:
                event, ident = cached_canonical_id(event_id), cached_canonical_id(section_id)
                if event is not None and ident is not None:
                    named.add((event, ident))
    return named


def _named_by_id(commands: Iterable[ConfirmHold | ReleaseHold | CancelBooking]) -> Named:
    """The holds or bookings named, each with the event learnt for it before the batch;
    one whose event is not known (no such hold or booking) is not looked for."""
    named: Named = set()
    for command in commands:
        ident = cached_canonical_id(
            command.booking_id if isinstance(command, CancelBooking) else command.hold_id
        )
        event = None if command.event_id is None else cached_canonical_id(command.event_id)
        if ident is not None and event is not None:
            named.add((event, ident))
    return named


def _sections_of(command: Book | PlaceHold, inventory: Inventory) -> list[Section]:
    found = (inventory.sections.get(cached_canonical_id(n) or "") for n in command.section_names)
    return [section for section in found if section is not None]


def _load_expired_in(
    conn: Connection, inventory: Inventory, in_sections: dict[str, Section], now: datetime
) -> dict[str, int]:
    if not in_sections:
        return {}
    named = {(section.event_id, ident) for ident, section in in_sections.items()}
    rows = _EXPIRED_IN_SECTIONS.execute(conn, {**_named(named), "now": now})
    found = {pair for pair in _pairs(rows) if pair[1] not in inventory.holds}
    return _load_holds(conn, inventory, found) if found else {}


def _load_holds(conn: Connection, inventory: Inventory, hold_ids: Named) -> dict[str, int]:
    """Read holds with their items into `inventory`; the caps of their events."""
    limits: dict[str, int] = {}
    for hold, row in holds_from_rows(_HOLDS.execute(conn, _named(hold_ids))):
        inventory.holds[hold.id] = hold
        if row.max_per_customer is not None:
            limits[hold.event_id] = row.max_per_customer
    return limits


def _load_tallies(
    conn: Connection, inventory: Inventory, commands: Sequence[Command], limits: dict[str, int]
) -> None:
    """Lock the tallies of capped customers the batch may change, made first if need be.

    A customer's first tickets in an event have no row to lock yet: two processes
    would both read 0 and the second would trip the CHECK. So every wanted row is
    made (0 tickets) or, if it exists, locked as it is, in key order, by one upsert.
    """
    wanted: dict[Tally, int] = {}  # -> the event's cap
    for command in commands:
        if isinstance(command, Book | PlaceHold) and command.customer_id is not None:
            for section in _sections_of(command, inventory)[:1]:
                if section.max_per_customer is not None:
                    wanted[(section.event_id, command.customer_id)] = section.max_per_customer
    for hold in inventory.holds.values():
        if hold.customer_id is not None and hold.event_id in limits:
            wanted[(hold.event_id, hold.customer_id)] = limits[hold.event_id]
    for booking in inventory.bookings.values():
        if booking.customer_id is not None and booking.event_id in limits:
            wanted[(booking.event_id, booking.customer_id)] = limits[booking.event_id]
    for key in inventory.tallies:
        wanted.pop(key, None)
    if not wanted:
        return
    # One round trip: the update that changes nothing locks the row and returns it, made
    # or found (one another transaction has just committed included), in key order.
    ordered = sorted(wanted.items())
    if conn.dialect.name == "postgresql":  # one statement text, whatever the count
        rows = conn.execute(
            _PG_TALLIES,
            {
                "tallies": json.dumps(
                    [{"event_id": e, "customer_id": c, "cap": cap} for (e, c), cap in ordered]
                )
            },
        )
    else:
        made = sqlite_insert(customer_tickets).values(
            [
                {"event_id": as_uuid(e), "customer_id": c, "tickets": 0, "max_tickets": cap}
                for (e, c), cap in ordered
            ]
        )
        rows = conn.execute(
            made.on_conflict_do_update(
                index_elements=[customer_tickets.c.event_id, customer_tickets.c.customer_id],
                set_={"tickets": customer_tickets.c.tickets},
            ).returning(
                customer_tickets.c.event_id,
                customer_tickets.c.customer_id,
                customer_tickets.c.tickets,
            )
        )
    for row in rows:
        inventory.tallies[(str(row.event_id), row.customer_id)] = row.tickets


def _load_answers(conn: Connection, inventory: Inventory, commands: Sequence[Command]) -> None:
    keys = {c.idempotency.ident for c in commands if c.idempotency is not None}
    if keys:
        answers, busy = claim_answers(conn, keys)
        inventory.answers.update(answers)
        inventory.busy_keys.update(busy)


def claim_answers(
    conn: Connection, keys: Iterable[tuple[str, str]]
) -> tuple[dict[tuple[str, str], StoredAnswer], set[tuple[str, str]]]:
    """The answers stored for `keys`, and those of them another transaction holds now.

    On PostgreSQL each key is claimed first with an advisory lock held until our
    commit, and only then read, so the read sees any answer committed before.
    """
    ordered = sorted(set(keys))
    busy: set[tuple[str, str]] = set()
    if conn.dialect.name == "postgresql":
        claimed = conn.execute(_PG_CLAIM_KEYS, {"keys": [f"{s}\x1f{k}" for s, k in ordered]})
        for joined, ours in claimed:
            if not ours:
                scope, _, key = joined.partition("\x1f")
                busy.add((scope, key))
    query = select(
        idempotency_keys.c.scope,
        idempotency_keys.c.key,
        idempotency_keys.c.fingerprint,
        idempotency_keys.c.outcome,
    ).where(pairs_in(idempotency_keys.c.scope, idempotency_keys.c.key, ordered, str))
    answers = {
        (row.scope, row.key): StoredAnswer(row.fingerprint, decode(row.outcome))  # type: ignore[arg-type]
        for row in conn.execute(query)
    }
    return answers, busy


def _load_events(conn: Connection, inventory: Inventory, commands: Sequence[Command]) -> None:
    """The events that exist among those named with a section that was not found."""
    unknown: set[str] = set()
    for command in commands:
        if not isinstance(command, Book | PlaceHold):
            continue
        event = cached_canonical_id(command.event_id)
        if event is None:
            continue
        for section in command.section_names:
            found = inventory.sections.get(cached_canonical_id(section) or "")
            if found is None or found.event_id != event:
                unknown.add(event)
    if unknown:
        inventory.events.update(
            str(row.id) for row in _EVENTS.execute(conn, {"ids": _uuids(unknown)})
        )
