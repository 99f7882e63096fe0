"""The inventory check: every invariant the seats obey, verified across the whole database.

`boxoffice check` runs it after a crash, a failover or a restore, and the
crash and failover tests run it too. Per section:

    capacity == remaining + held + sold, none negative
    held     == seats of the section's hold items still counted as held
    sold     == seats of the section's confirmed bookings
    remaining, held, sold == what the audit trail rebuilds (`services/audit.py`)

and per hold and customer:

    an active hold's items are all counted as held; a released or confirmed hold's none
    (an expired hold's keep their seats until their section is next written)
    a confirmed hold has bookings for exactly the seats it held
    each customer's tally in a capped event == the seats of its active holds and
    confirmed bookings there

Everything is read in one snapshot (REPEATABLE READ on PostgreSQL, one read
transaction on SQLite), so batches committing meanwhile cannot make it report
a violation. The comparisons are plain Python (`find_violations`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from boxoffice.db.database import Database
from boxoffice.db.tables import bookings, customer_tickets, events, hold_items, holds, sections
from boxoffice.domain.audit import Counts
from boxoffice.services.audit import rebuilt_counts
from boxoffice.services.unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class Violation:
    """One invariant that does not hold; `subject` names the row (section, hold, customer)."""

    rule: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.subject}: {self.detail}"


@dataclass(frozen=True, slots=True)
class SectionRow:
    id: str
    capacity: int
    remaining: int
    held: int
    sold: int


@dataclass(slots=True)
class Snapshot:
    """What the check compares, read in one snapshot; sums keyed by id."""

    sections: list[SectionRow] = field(default_factory=list)
    held_by_section: dict[str, int] = field(default_factory=dict)  # active hold items
    sold_by_section: dict[str, int] = field(default_factory=dict)  # confirmed bookings
    audit: dict[str, Counts] = field(default_factory=dict)
    # hold id -> (status, items counted as held, items not) for every hold
    hold_items_by_status: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    # confirmed hold id -> (seats held by its items, seats of its bookings)
    confirmed_seats: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (event id, customer id) -> stored tally / tickets found, in events with a cap
    tallies: dict[tuple[str, str], int] = field(default_factory=dict)
    tickets: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Report:
    sections: int
    holds: int
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations


def find_violations(snapshot: Snapshot) -> list[Violation]:
    """Every invariant `snapshot` breaks, sections first."""
    found: list[Violation] = []
    audit = dict(snapshot.audit)
    for s in snapshot.sections:
        found += section_violations(
            s, snapshot.held_by_section.get(s.id, 0), snapshot.sold_by_section.get(s.id, 0)
        )
        rebuilt = audit.pop(s.id, Counts()).as_tuple()
        if (s.remaining, s.held, s.sold) != rebuilt:
            found.append(
                Violation(
                    "audit_trail",
                    s.id,
                    f"remaining/held/sold {_counts(s)}, audit trail {_slash(rebuilt)}",
                )
            )
    for section_id, orphan in audit.items():
        found.append(
            Violation("audit_trail", section_id, f"a trail {_slash(orphan.as_tuple())} but no row")
        )
    for hold_id, (status, active, inactive) in snapshot.hold_items_by_status.items():
        if status == "active" and inactive:
            found.append(
                Violation("hold_items", hold_id, f"active hold, {inactive} items released")
            )
        # An expired hold's items keep their seats until their section is next written
        # (`give_back_expired`); a released or confirmed one's never do.
        if status in ("released", "confirmed") and active:
            found.append(Violation("hold_items", hold_id, f"{status} hold, {active} items held"))
    for hold_id, (held, booked) in snapshot.confirmed_seats.items():
        if held != booked:
            found.append(
                Violation("confirmed_hold", hold_id, f"held {held} seats, booked {booked}")
            )
    for key in sorted(snapshot.tallies.keys() | snapshot.tickets.keys()):
        tally, tickets = snapshot.tallies.get(key, 0), snapshot.tickets.get(key, 0)
        if tally != tickets:
            found.append(
                Violation(
                    "customer_tickets",
                    f"{key[1]} in event {key[0]}",
                    f"tally {tally}, held + confirmed {tickets}",
                )
            )
    return found


def section_violations(s: SectionRow, held: int, sold: int) -> list[Violation]:
    """What one section's row breaks, given the seats of its active hold items (`held`)
    and of its confirmed bookings (`sold`)."""
    found = []
    if min(s.remaining, s.held, s.sold) < 0:
        found.append(Violation("negative", s.id, f"remaining/held/sold {_counts(s)}"))
    if s.remaining + s.held + s.sold != s.capacity:
        found.append(
            Violation(
                "seats_add_up",
                s.id,
                f"remaining/held/sold {_counts(s)} do not add up to capacity {s.capacity}",
            )
        )
    if s.held != held:
        found.append(
            Violation("held_matches_holds", s.id, f"held {s.held}, active hold items {held}")
        )
    if s.sold != sold:
        found.append(
            Violation("sold_matches_bookings", s.id, f"sold {s.sold}, confirmed bookings {sold}")
        )
    return found


@dataclass(frozen=True, slots=True)
class WatchedSection:
    """A section of one of the newest events, as read for the inventory metrics."""

    event_id: str
    name: str
    row: SectionRow


@dataclass(frozen=True, slots=True)
class Watch:
    sections: list[WatchedSection]
    violations: list[Violation] | None  # None: looked at, not checked


async def watch_newest_sections(database: Database, max_sections: int, *, check: bool) -> Watch:
    """The sections of the newest events (at most `max_sections`); if `check`, what they break.

    A look reads those sections' rows only. A check is the cheap, bounded part of
    `boxoffice check`: per section, the counts add up and none is negative, `held`
    matches its active hold items and `sold` its confirmed bookings (not the audit
    trail, holds or tallies), in the same statement, so in one snapshot on either
    database. It reads the watched events' confirmed bookings once (through the
    bookings' event index), tens of milliseconds per 10,000 bookings, so the metrics
    check less often than they look (docs/performance.md).
    """
    watched = (
        select(
            sections.c.id,
            sections.c.event_id,
            sections.c.name,
            sections.c.capacity,
            sections.c.remaining,
            sections.c.held,
            sections.c.sold,
            sections.c.position,
            events.c.created_at,
        )
        .join(events, events.c.id == sections.c.event_id)
        .order_by(events.c.created_at.desc(), events.c.id, sections.c.position)
        .limit(max_sections)
        .cte("watched")
    )
    newest_first = (watched.c.created_at.desc(), watched.c.event_id, watched.c.position)
    sold = (
        select(bookings.c.section_id, func.sum(bookings.c.qty).label("qty"))
        .where(
            bookings.c.event_id.in_(select(watched.c.event_id)),
            bookings.c.status == "confirmed",
        )
        .group_by(bookings.c.section_id)
        .subquery("sold")
    )
    held = (
        select(hold_items.c.section_id, func.sum(hold_items.c.qty).label("qty"))
        .where(hold_items.c.active, hold_items.c.section_id.in_(select(watched.c.id)))
        .group_by(hold_items.c.section_id)
        .subquery("held")
    )
    statement = (
        select(
            watched,
            func.coalesce(held.c.qty, 0).label("held_items"),
            func.coalesce(sold.c.qty, 0).label("confirmed"),
        )
        .select_from(
            watched.outerjoin(held, held.c.section_id == watched.c.id).outerjoin(
                sold, sold.c.section_id == watched.c.id
            )
        )
        .order_by(*newest_first)
        if check
        else select(watched).order_by(*newest_first)
    )
    found: list[WatchedSection] = []
    violations: list[Violation] = []
    async with UnitOfWork(database, write=False) as uow:
        for row in await uow.conn.execute(statement):
            section = SectionRow(str(row.id), row.capacity, row.remaining, row.held, row.sold)
            found.append(WatchedSection(str(row.event_id), row.name, section))
            if check:
                violations += section_violations(section, int(row.held_items), int(row.confirmed))
    return Watch(found, violations if check else None)


async def check_inventory(database: Database) -> Report:
    """Read everything the invariants need in one snapshot, and compare."""
    snapshot = Snapshot()
    async with UnitOfWork(database, write=False, snapshot=True) as uow:
        conn = uow.conn
        snapshot.audit = await rebuilt_counts(conn)
        for row in await conn.execute(
            select(
                sections.c.id,
                sections.c.capacity,
                sections.c.remaining,
                sections.c.held,
                sections.c.sold,
            )
        ):
            snapshot.sections.append(
                SectionRow(str(row.id), row.capacity, row.remaining, row.held, row.sold)
            )
        snapshot.held_by_section = _sums(
            await conn.execute(
                select(hold_items.c.section_id, func.sum(hold_items.c.qty))
                .where(hold_items.c.active)
                .group_by(hold_items.c.section_id)
            )
        )
        snapshot.sold_by_section = _sums(
            await conn.execute(
                select(bookings.c.section_id, func.sum(bookings.c.qty))
                .where(bookings.c.status == "confirmed")
                .group_by(bookings.c.section_id)
            )
        )
        active_qty = func.sum(func.coalesce(hold_items.c.qty, 0)).filter(hold_items.c.active)
        inactive_qty = func.sum(func.coalesce(hold_items.c.qty, 0)).filter(~hold_items.c.active)
        for hold_id, status, active, inactive in await conn.execute(
            select(holds.c.id, holds.c.status, active_qty, inactive_qty)
            .select_from(holds.outerjoin(hold_items, hold_items.c.hold_id == holds.c.id))
            .group_by(holds.c.id, holds.c.status)
        ):
            snapshot.hold_items_by_status[str(hold_id)] = (status, active or 0, inactive or 0)
        held_seats = _sums(
            await conn.execute(
                select(hold_items.c.hold_id, func.sum(hold_items.c.qty))
                .join(holds, holds.c.id == hold_items.c.hold_id)
                .where(holds.c.status == "confirmed")
                .group_by(hold_items.c.hold_id)
            )
        )
        booked_seats = _sums(
            await conn.execute(
                select(bookings.c.hold_id, func.sum(bookings.c.qty))
                .where(bookings.c.hold_id.is_not(None))
                .group_by(bookings.c.hold_id)
            )
        )
        for hold_id, held in held_seats.items():
            snapshot.confirmed_seats[hold_id] = (held, booked_seats.get(hold_id, 0))
        for event_id, customer_id, tally in await conn.execute(
            select(
                customer_tickets.c.event_id,
                customer_tickets.c.customer_id,
                customer_tickets.c.tickets,
            )
        ):
            snapshot.tallies[(str(event_id), customer_id)] = tally
        capped = events.c.max_per_customer.is_not(None)
        for event_id, customer_id, qty in await conn.execute(
            select(bookings.c.event_id, bookings.c.customer_id, func.sum(bookings.c.qty))
            .join(events, events.c.id == bookings.c.event_id)
            .where(capped, bookings.c.status == "confirmed", bookings.c.customer_id.is_not(None))
            .group_by(bookings.c.event_id, bookings.c.customer_id)
        ):
            _add(snapshot.tickets, (str(event_id), customer_id), qty)
        for event_id, customer_id, qty in await conn.execute(
            select(holds.c.event_id, holds.c.customer_id, func.sum(hold_items.c.qty))
            .join(hold_items, hold_items.c.hold_id == holds.c.id)
            .join(events, events.c.id == holds.c.event_id)
            .where(capped, holds.c.status == "active", holds.c.customer_id.is_not(None))
            .group_by(holds.c.event_id, holds.c.customer_id)
        ):
            _add(snapshot.tickets, (str(event_id), customer_id), qty)
    return Report(
        len(snapshot.sections), len(snapshot.hold_items_by_status), find_violations(snapshot)
    )


def _sums(rows: Iterable[tuple[object, object]]) -> dict[str, int]:
    return {str(key): int(total or 0) for key, total in rows}  # type: ignore[call-overload]


def _add(totals: dict[tuple[str, str], int], key: tuple[str, str], qty: object) -> None:
    totals[key] = totals.get(key, 0) + int(qty or 0)  # type: ignore[call-overload]


def _counts(s: SectionRow) -> str:
    return _slash((s.remaining, s.held, s.sold))


def _slash(counts: Iterable[int]) -> str:
    return "/".join(map(str, counts))
