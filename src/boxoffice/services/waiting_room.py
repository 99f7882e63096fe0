"""The waiting room's use cases: set it up, join the line, and let the next ones in.

    PUT  /events/{id}/waiting-room ─> put_room     organizer: settings, kept with the line
    POST /events/{id}/queue        ─> join         one place per customer (insert or read)
    admission loop (one process)   ─> admit        the watermark moves, figures published
    every process, a few times/s   ─> read_rooms + read_steps   (services/room_watch.py)

Each function owns its transaction. The line itself is rows of
`queue_places` (one per customer, its order key) and the watermark's steps in
`admission_steps`; the room's row keeps the settings, the watermark and the
figures the admission loop published last, so a process learns everything a
poll needs from one row and the new steps, never per poll.

The admission loop runs in every process, and takes turns: whoever holds the
room's lease (`lease_holder`, `lease_until`, taken by a conditional UPDATE that
also takes the row's lock) moves the watermark, and every write of the tick
names the holder, so a process whose lease lapsed mid-tick writes nothing.
"""

from __future__ import annotations

import json
import math
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from boxoffice.db.database import Database
from boxoffice.db.tables import (
    admission_steps,
    audit_records,
    bookings,
    events,
    hold_items,
    holds,
    queue_places,
    sections,
    service_secrets,
    waiting_rooms,
)
from boxoffice.domain.access import Principal
from boxoffice.domain.errors import WaitingRoomNotFound
from boxoffice.domain.queue_order import (
    FIFO_BASE,
    NOBODY,
    PREQUEUE_TOP,
    RANDOM_BASE,
    RANDOM_TOP,
    Band,
)
from boxoffice.domain.waiting_room import (
    DEFAULT_PRIOR_QUANTITY,
    RATE_WINDOW,
    PurchaseStats,
    RoomFigures,
    RoomSettings,
    RoomState,
    admissions,
    paced_after,
    resumed_bucket,
)
from boxoffice.services.events import managed_event, sections_as_seen
from boxoffice.services.unit_of_work import UnitOfWork

__all__ = [
    "FIFO_BUCKETS",
    "Joining",
    "Published",
    "Room",
    "admit",
    "get_room",
    "join",
    "put_room",
    "read_rooms",
    "read_steps",
    "signing_secret",
]

FIFO_BUCKETS = 32  # the fifo band's waiting, published in this many buckets of keys
SECRET_NAME = "waiting_room"
PACE_FLOOR = timedelta(seconds=5)  # the shortest span a pace is measured over


@dataclass(frozen=True, slots=True)
class Published:
    """The figures the admission loop published at its last tick, for everyone to read."""

    state: RoomState
    limited_by: str | None
    waiting: int
    shopping: int
    admitted_total: int
    admitted_last_minute: int
    admitted_per_second: float
    seats_left: int
    seats_held: int
    average_quantity: float
    bands: tuple[Band, ...]
    admitted_now: int = 0  # by the tick that published these
    paced_until: str | None = None  # the pace's bucket (ISO 8601), the next tick's input

    @property
    def sold_out(self) -> bool:
        return self.state == "sold_out"

    @property
    def servable_places(self) -> int:
        """How many more shoppers the seats left and held could serve, at the average
        quantity: the places of the line whose turn the stock allows at all."""
        return math.ceil((self.seats_left + self.seats_held) / max(1.0, self.average_quantity))

    def to_json(self) -> str:
        fields = asdict(self)
        fields["bands"] = [[band.low, band.top, band.waiting] for band in self.bands]
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Published:
        """Figures as any version wrote them: a key this version does not know (written by
        a newer one, in a rolling deploy or after a rollback) is left out, not an error."""
        found: dict[str, Any] = json.loads(text)
        known = {name: found[name] for name in PUBLISHED_FIELDS if name in found}
        known["bands"] = tuple(Band(*band) for band in known["bands"])
        return cls(**known)


PUBLISHED_FIELDS = tuple(field.name for field in dataclass_fields(Published))


@dataclass(frozen=True, slots=True)
class Room:
    """An event's waiting room as stored: settings, where the line stands, the figures."""

    event_id: str
    settings: RoomSettings
    line_epoch: datetime  # fifo order keys count microseconds from here
    watermark: int
    published: Published | None
    published_at: datetime | None
    updated_at: datetime
    organizer_id: str | None = None


def _room(row: Any) -> Room:
    settings = RoomSettings.read_from(row)
    return Room(
        event_id=str(row.event_id),
        settings=settings,
        line_epoch=row.line_epoch,
        watermark=row.watermark,
        published=None if row.figures is None else Published.from_json(row.figures),
        published_at=row.figures_at,
        updated_at=row.updated_at,
        organizer_id=getattr(row, "organizer_id", None),
    )


async def put_room(
    database: Database, event_id: str, settings: RoomSettings, actor: Principal, now: datetime
) -> Room:
    """Set the event's waiting room; the line, its watermark and its figures are kept, so
    a room changed or paused mid-sale keeps everyone's place."""
    columns = {**settings.values(), "updated_at": now}
    async with UnitOfWork(database, write=True) as uow:
        ident = await managed_event(uow.conn, event_id, actor)
        changed = await uow.conn.execute(
            update(waiting_rooms).where(waiting_rooms.c.event_id == ident).values(**columns)
        )
        if changed.rowcount == 0:
            await uow.conn.execute(
                insert(waiting_rooms).values(
                    event_id=ident, line_epoch=now, watermark=NOBODY, **columns
                )
            )
        row = (
            await uow.conn.execute(select(waiting_rooms).where(waiting_rooms.c.event_id == ident))
        ).one()
        await uow.commit()
    return _room(row)


async def get_room(database: Database, event_id: str, actor: Principal) -> Room:
    """The event's waiting room, for those who manage the event."""
    async with UnitOfWork(database, write=False) as uow:
        ident = await managed_event(uow.conn, event_id, actor)
        row = (
            await uow.conn.execute(select(waiting_rooms).where(waiting_rooms.c.event_id == ident))
        ).first()
    if row is None:
        raise WaitingRoomNotFound(event_id)
    return _room(row)


async def read_rooms(database: Database) -> list[Room]:
    """Every room that is on, for a process's watch."""
    async with UnitOfWork(database, write=False) as uow:
        rows = (await uow.conn.execute(select(waiting_rooms).where(waiting_rooms.c.enabled))).all()
    return [_room(row) for row in rows]


async def read_room(database: Database, event_id: str) -> Room | None:
    """The event's room if it is on: for a process that has not seen it since it was
    turned on (elsewhere, within the last refresh)."""
    ident = uuid.UUID(event_id)
    async with UnitOfWork(database, write=False) as uow:
        row = (
            await uow.conn.execute(
                select(waiting_rooms).where(
                    waiting_rooms.c.event_id == ident, waiting_rooms.c.enabled
                )
            )
        ).first()
    return None if row is None else _room(row)


async def read_steps(
    database: Database, event_id: str, *, after_key: int, since: datetime | None
) -> tuple[int, list[tuple[datetime, int]]]:
    """The watermark's steps past `after_key`; with `since` (a first read), only those
    taken since then, and the floor: the highest key admitted before it."""
    ident = uuid.UUID(event_id)
    query = (
        select(admission_steps.c.at, admission_steps.c.order_key)
        .where(admission_steps.c.event_id == ident, admission_steps.c.order_key > after_key)
        .order_by(admission_steps.c.order_key)
    )
    async with UnitOfWork(database, write=False) as uow:
        floor = after_key
        if since is not None:
            query = query.where(admission_steps.c.at > since)
            older = (
                await uow.conn.execute(
                    select(func.max(admission_steps.c.order_key)).where(
                        admission_steps.c.event_id == ident, admission_steps.c.at <= since
                    )
                )
            ).scalar()
            floor = max(floor, NOBODY if older is None else int(older))
        steps = [(row.at, int(row.order_key)) for row in await uow.conn.execute(query)]
    return floor, steps


@dataclass(frozen=True, slots=True)
class Joining:
    """A customer asking for a place: `order_key` is where it goes if it has none yet."""

    event_id: str
    customer_id: str
    order_key: int
    at: datetime


# PostgreSQL: the whole burst in one statement, run on its own (autocommit; behind a
# transaction pooler, in a transaction that brings the session's settings). A customer's
# place is made, or the one it has is returned: the no-op update on a conflict locks and
# returns the stored row, even one another transaction has just committed (DO NOTHING
# would return nothing for it, and a read after it could miss it). Rows go in key order,
# so two processes upserting the same customers cannot deadlock. The price: a customer
# joining again writes a new version of its row (vacuumed later).
_PG_JOIN = text(
    """
    INSERT INTO queue_places (event_id, customer_id, order_key, joined_at)
    SELECT j.event_id, j.customer_id, j.order_key, j.joined_at
      FROM json_to_recordset(CAST(:joins AS json))
           AS j(event_id uuid, customer_id text, order_key bigint, joined_at timestamptz)
     ORDER BY j.event_id, j.customer_id
    ON CONFLICT (event_id, customer_id) DO UPDATE SET customer_id = EXCLUDED.customer_id
    RETURNING event_id, customer_id, order_key, joined_at
    """
).columns(
    queue_places.c.event_id,
    queue_places.c.customer_id,
    queue_places.c.order_key,
    queue_places.c.joined_at,
)


def _aware(at: datetime) -> datetime:
    """`at` in UTC; a naive time would be read in the server's zone, so it is refused."""
    if at.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return at.astimezone(UTC)


async def join(database: Database, joins: Sequence[Joining]) -> list[tuple[int, datetime]]:
    """Each customer's place in its event's line, in the order asked: the one it has, or a
    new one at its `order_key`. One place per customer, however many joins race for it,
    in one transaction for them all (the joins of a burst are written together)."""
    rows = {(str(uuid.UUID(joining.event_id)), joining.customer_id): joining for joining in joins}
    places: dict[tuple[str, str], tuple[int, datetime]] = {}
    if database.dialect == "postgresql":
        document = json.dumps(
            [
                {
                    "event_id": event_id,
                    "customer_id": customer_id,
                    "order_key": joining.order_key,
                    "joined_at": _aware(joining.at).isoformat(),
                }
                for (event_id, customer_id), joining in rows.items()
            ]
        )
        async with UnitOfWork(database, write=True, single_statement=True) as uow:
            found = await uow.conn.execute(_PG_JOIN, {"joins": document})
            for row in found:
                places[(str(row.event_id), row.customer_id)] = (int(row.order_key), row.joined_at)
            await uow.commit()
    else:  # SQLite: the writer's lock serializes joins; nothing can commit in between
        values = [
            {
                "event_id": uuid.UUID(event_id),
                "customer_id": customer_id,
                "order_key": joining.order_key,
                "joined_at": joining.at,
            }
            for (event_id, customer_id), joining in rows.items()
        ]
        async with UnitOfWork(database, write=True) as uow:
            await uow.conn.execute(sqlite_insert(queue_places).on_conflict_do_nothing(), values)
            by_event: dict[str, list[str]] = {}
            for event_id, customer_id in rows:
                by_event.setdefault(event_id, []).append(customer_id)
            for event_id, customers in by_event.items():
                found = await uow.conn.execute(
                    select(
                        queue_places.c.customer_id,
                        queue_places.c.order_key,
                        queue_places.c.joined_at,
                    ).where(
                        queue_places.c.event_id == uuid.UUID(event_id),
                        queue_places.c.customer_id.in_(customers),
                    )
                )
                for row in found:
                    places[(event_id, row.customer_id)] = (int(row.order_key), row.joined_at)
            await uow.commit()
    return [places[(str(uuid.UUID(j.event_id)), j.customer_id)] for j in joins]


async def signing_secret(database: Database, now: datetime) -> bytes:
    """The secret queue tickets are signed with when none is configured: made once, by
    whichever process asks first, and the same for every process after."""
    query = select(service_secrets.c.secret).where(service_secrets.c.name == SECRET_NAME)
    insert_ = pg_insert if database.dialect == "postgresql" else sqlite_insert
    # Read first, without SQLite's write lock: every process start comes here, and a start
    # that waited for the lock (a long write elsewhere) would not be serving, nor hear
    # SIGTERM, until it got it. Only the very first start writes.
    async with UnitOfWork(database, write=False) as uow:
        found = (await uow.conn.execute(query)).scalar()
    if found is not None:
        return bytes.fromhex(found)
    async with UnitOfWork(database, write=True) as uow:
        found = (await uow.conn.execute(query)).scalar()
        if found is None:
            # Another server may make it at the same moment: its secret is then the one.
            await uow.conn.execute(
                insert_(service_secrets)
                .values(name=SECRET_NAME, secret=secrets.token_hex(32), created_at=now)
                .on_conflict_do_nothing()
            )
            found = (await uow.conn.execute(query)).scalar()
        await uow.commit()
    assert found is not None
    return bytes.fromhex(found)


async def admit(
    database: Database,
    event_id: str,
    *,
    holder: str,
    now: datetime,
    lease: timedelta,
    clock_skew: timedelta,
    shopper_grace: timedelta | None = None,
) -> Room | None:
    """One tick of the admission loop: if this process holds (or takes) the room's lease,
    let in as many as `admissions()` allows and publish the figures. None: another
    process holds the lease, or the room is off."""
    ident = uuid.UUID(event_id)
    # Three short transactions, so SQLite's write lock is held only to write: the lease,
    # the measurements (a snapshot), then the step, written only if nobody else moved
    # the watermark meanwhile (a lease that lapsed mid-tick writes nothing).
    async with UnitOfWork(database, write=True) as uow:
        taken = await uow.conn.execute(
            update(waiting_rooms)
            .where(
                waiting_rooms.c.event_id == ident,
                waiting_rooms.c.enabled,
                (waiting_rooms.c.lease_holder == holder)
                | waiting_rooms.c.lease_holder.is_(None)
                | (waiting_rooms.c.lease_until < now),
            )
            .values(lease_holder=holder, lease_until=now + lease)
        )
        await uow.commit()
    if taken.rowcount == 0:
        return None
    async with UnitOfWork(database, write=False, snapshot=True) as uow:
        row = (
            await uow.conn.execute(
                select(waiting_rooms, events.c.max_per_customer, events.c.organizer_id)
                .join(events, events.c.id == waiting_rooms.c.event_id)
                .where(waiting_rooms.c.event_id == ident)
            )
        ).one()
        room = _room(row)
        published, watermark, admitted = await uow.conn.run_sync(
            _tick, ident, room, row.max_per_customer, now, clock_skew, shopper_grace
        )
    async with UnitOfWork(database, write=True) as uow:
        moved = await uow.conn.execute(
            update(waiting_rooms)
            .where(
                waiting_rooms.c.event_id == ident,
                waiting_rooms.c.lease_holder == holder,
                waiting_rooms.c.watermark == room.watermark,
            )
            .values(watermark=watermark, figures=published.to_json(), figures_at=now)
        )
        if moved.rowcount == 0:
            return None
        if watermark > room.watermark:
            await uow.conn.execute(
                insert(admission_steps).values(
                    event_id=ident, order_key=watermark, at=now, admitted=admitted
                )
            )
        await uow.commit()
    return Room(
        room.event_id,
        room.settings,
        room.line_epoch,
        watermark,
        published,
        now,
        room.updated_at,
        room.organizer_id,
    )


def _tick(
    conn: Connection,
    ident: uuid.UUID,
    room: Room,
    max_per_customer: int | None,
    now: datetime,
    clock_skew: timedelta,
    shopper_grace: timedelta | None = None,
) -> tuple[Published, int, int]:
    """Measure and decide: the figures to publish, where the watermark goes, and how many
    that lets in (run on the connection's own side, sync, in one snapshot)."""
    settings = room.settings
    watermark = room.watermark
    steps = admission_steps.c
    places = queue_places.c

    def scalar(query: Any) -> int:
        return int(conn.execute(query).scalar() or 0)

    in_window = and_(steps.event_id == ident, steps.at > now - RATE_WINDOW)
    admitted_last_minute = scalar(select(func.sum(steps.admitted)).where(in_window))
    first_in_window = conn.execute(select(func.min(steps.at)).where(in_window)).scalar()

    def admitted_before(moment: datetime) -> int:
        """The highest key let in at or before `moment` (NOBODY: none)."""
        found = conn.execute(
            select(func.max(steps.order_key)).where(steps.event_id == ident, steps.at <= moment)
        ).scalar()
        return NOBODY if found is None else int(found)

    session_start = admitted_before(now - settings.session_duration)
    # A shopper is likely to take seats until it has tried: a hold or a booking, or a
    # refusal (sold out in its sections, over its limit). Counting those refused until
    # their sessions ended kept the last seats from anyone else for a whole session.
    tried = exists().where(
        audit_records.c.event_id == places.event_id,
        audit_records.c.customer_id == places.customer_id,
    )
    untried = and_(places.event_id == ident, places.order_key <= watermark, ~tried)
    in_session = places.order_key > session_start
    # Likely to take seats: those of them let in within the grace. One who has not tried
    # by then (a bot, a closed tab) keeps its token, but no longer holds the stock back.
    in_grace = in_session
    if shopper_grace is not None and shopper_grace < settings.session_duration:
        in_grace = places.order_key > max(session_start, admitted_before(now - shopper_grace))
    # Both counts in one pass: each was a scan of the admitted places with an anti-join on
    # the audit trail, 13 ms a tick in a sale (docs/performance.md).
    shopping, likely = (
        int(n)
        for n in conn.execute(
            select(func.count(), func.count().filter(in_grace)).where(untried, in_session)
        ).one()
    )
    waiting = scalar(
        select(func.count()).where(places.event_id == ident, places.order_key > watermark)
    )
    seats = sections_as_seen(now, [ident]).where(sections.c.event_id == ident).subquery()
    seats_row = conn.execute(
        select(
            func.coalesce(func.sum(seats.c.remaining + seats.c.expired), 0),
            func.coalesce(func.sum(seats.c.held - seats.c.expired), 0),
        )
    ).one()
    direct = and_(bookings.c.event_id == ident, bookings.c.hold_id.is_(None))
    purchases = scalar(select(func.count()).where(holds.c.event_id == ident)) + scalar(
        select(func.count()).where(direct)
    )
    tickets = scalar(
        select(func.sum(hold_items.c.qty)).where(hold_items.c.event_id == ident)
    ) + scalar(select(func.sum(bookings.c.qty)).where(direct))
    stats = PurchaseStats(purchases, tickets, max_per_customer or DEFAULT_PRIOR_QUANTITY)
    bucket = None if room.published is None else room.published.paced_until
    paced_until = None if bucket is None else datetime.fromisoformat(bucket)
    decided_at = now - clock_skew
    since_tick = None if room.published_at is None else now - room.published_at
    paced_until = resumed_bucket(settings, paced_until, since_tick, decided_at)
    figures = RoomFigures(
        shopping=shopping,
        admitted_last_minute=admitted_last_minute,
        seats_left=int(seats_row[0]),
        waiting=waiting,
        seats_held=int(seats_row[1]),
        stats=stats,
        likely_buyers=likely,
        paced_until=paced_until,
    )
    # The line opens at opensAt as the slowest clock among the servers sees it: a pre-queue
    # joiner on a clock that runs late still draws a key before anyone is let in.
    decision = admissions(settings, figures, decided_at)
    admitted_now = 0
    if decision.count > 0 and decision.state in ("open", "off"):
        last = conn.execute(
            select(places.order_key)
            .where(places.event_id == ident, places.order_key > watermark)
            .order_by(places.order_key)
            .offset(decision.count - 1)
            .limit(1)
        ).scalar()
        if last is None:  # fewer waiting than counted a moment ago: let them all in
            last = conn.execute(
                select(func.max(places.order_key)).where(places.event_id == ident)
            ).scalar()
        if last is not None and last > watermark:
            admitted_now = scalar(
                select(func.count()).where(
                    places.event_id == ident,
                    places.order_key > watermark,
                    places.order_key <= last,
                )
            )
            watermark = int(last)
    admitted_total = admitted_now + scalar(
        select(func.sum(steps.admitted)).where(steps.event_id == ident)
    )
    recent = admitted_last_minute + admitted_now
    paced_until = paced_after(settings, decision, paced_until, decided_at, admitted_now)
    span = PACE_FLOOR if first_in_window is None else max(PACE_FLOOR, now - first_in_window)
    published = Published(
        state=decision.state,
        limited_by=decision.limited_by,
        waiting=waiting - admitted_now,
        shopping=shopping + admitted_now,
        admitted_total=admitted_total,
        admitted_last_minute=recent,
        admitted_per_second=round(recent / span.total_seconds(), 3),
        seats_left=figures.seats_left,
        seats_held=figures.seats_held,
        average_quantity=float(stats.average_quantity()),
        bands=_bands(conn, ident, watermark),
        admitted_now=admitted_now,
        paced_until=None if paced_until is None else paced_until.isoformat(),
    )
    return published, watermark, admitted_now


def _bands(conn: Connection, ident: uuid.UUID, watermark: int) -> tuple[Band, ...]:
    """Who waits where: the pre-queue and random bands whole (their keys are uniform), the
    fifo band in buckets (arrivals come in bursts); a place is estimated from these."""
    places = queue_places.c
    waiting = and_(places.event_id == ident, places.order_key > watermark)
    band = case((places.order_key >= RANDOM_BASE, 2), (places.order_key >= FIFO_BASE, 1), else_=0)
    counts = {
        int(which): (int(count), int(low), int(high))
        for which, count, low, high in conn.execute(
            select(band, func.count(), func.min(places.order_key), func.max(places.order_key))
            .where(waiting)
            .group_by(band)
        )
    }
    bands: list[Band] = []
    if 0 in counts:
        bands.append(Band(0, PREQUEUE_TOP, counts[0][0]))
    if 1 in counts:
        _, low, high = counts[1]
        width = max(1, -(-(high - low + 1) // FIFO_BUCKETS))
        bucket = (places.order_key - low) // width
        for index, count in conn.execute(
            select(bucket, func.count())
            .where(waiting, places.order_key >= FIFO_BASE, places.order_key < RANDOM_BASE)
            .group_by(bucket)
            .order_by(bucket)
        ):
            start = low + int(index) * width
            bands.append(Band(start, start + width, int(count)))
    if 2 in counts:
        bands.append(Band(RANDOM_BASE, RANDOM_TOP, counts[2][0]))
    return tuple(bands)
