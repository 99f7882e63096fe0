"""What one process knows of the waiting rooms, and its turn at letting people in.

    every WAITING_ROOM_REFRESH_MS: read_rooms + read_steps ─> RoomView per event
    every WAITING_ROOM_TICK_MS:    admit() per room (only the lease holder acts)
    a poll, a join, a purchase:    view(event) ─ a dict lookup, no database

A poll is answered from its ticket and the `RoomView` kept here: the room's
settings, its watermark with the steps of the current sessions, and the
figures its admission loop published (the bands of who waits where, the pace,
sold out or not). They are at most a refresh old; the watermark never moves
back whatever a refresh reads (`Watermark.merged`), so an admitted ticket
stays admitted on every process.

Every process runs the admission loop too; the room's lease decides which one
acts (services/waiting_room.admit). If it dies, another takes over when the
lease lapses, from the state in the database: a restart loses nobody's place.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from boxoffice.db.database import Database
from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.domain.ids import canonical_id
from boxoffice.domain.queue_order import (
    MAX_POLL_SECONDS,
    NOBODY,
    POLLS_BEFORE_ONES_TURN,
    LineSnapshot,
    Watermark,
)
from boxoffice.domain.queue_tickets import TicketSigner
from boxoffice.observability.metrics import (
    QUEUE_ADMITTED,
    QUEUE_SHOPPING,
    QUEUE_WAITING,
)
from boxoffice.periodic import Periodic
from boxoffice.services import waiting_room as rooms
from boxoffice.services.clock import Clock
from boxoffice.services.line_joiner import LineJoiner
from boxoffice.services.waiting_room import Room

log = structlog.get_logger("boxoffice.waiting_room")

__all__ = ["RoomView", "RoomWatch"]

LEASE_TICKS = 10  # a lease lasts this many ticks: a dead holder is replaced that soon


@dataclass(frozen=True, slots=True)
class RoomView:
    """An event's room as this process last read it."""

    room: Room
    snapshot: LineSnapshot

    @property
    def gates_purchases(self) -> bool:
        """Whether buying in the event needs an admission token."""
        return self.room.settings.enabled and self.room.settings.queueing_method != "passthrough"


class RoomWatch:
    """The per-process view of every room that is on, and the admission loop."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock,
        refresh_seconds: float,
        tick_seconds: float,
        clock_skew_seconds: float,
        max_poll_seconds: int = MAX_POLL_SECONDS,
        polls_per_wait: int = POLLS_BEFORE_ONES_TURN,
        shopper_grace_seconds: float = 0,
        secret: bytes | None = None,
        retired_secrets: tuple[bytes, ...] = (),
    ) -> None:
        self._database = database
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._tick_seconds = tick_seconds
        self._clock_skew = timedelta(seconds=clock_skew_seconds)
        self.max_poll_seconds = max_poll_seconds
        self._polls_per_wait = polls_per_wait
        # 0: a shopper who has not tried counts for its whole session.
        self._shopper_grace = (
            timedelta(seconds=shopper_grace_seconds) if shopper_grace_seconds > 0 else None
        )
        self._secret = secret
        self._retired = retired_secrets
        self._holder = uuid.uuid4().hex
        self._views: dict[str, RoomView] = {}
        self._watermarks: dict[str, Watermark] = {}
        self._loops: list[Periodic] = []
        self._arrivals: dict[str, int] = {}
        self.joiner = LineJoiner(database)
        self._signer: TicketSigner | None = None

    @property
    def signer(self) -> TicketSigner:
        if self._signer is None:
            raise RuntimeError("the room watch is not started")
        return self._signer

    def arrival(self, event_id: str, micros: int) -> int:
        """A fifo joiner's arrival, in microseconds since the line's epoch: later than every
        other this process gave out for the event, so its joiners never tie."""
        arrived = max(micros, self._arrivals.get(event_id, -1) + 1)
        self._arrivals[event_id] = arrived
        return arrived

    def view(self, event_id: str) -> RoomView | None:
        """The event's room, if it is on; `event_id` as a client spelled it."""
        if not self._views:
            return None
        found = self._views.get(event_id)
        if found is None:
            canonical = canonical_id(event_id)
            found = None if canonical is None else self._views.get(canonical)
        return found

    async def load(self, event_id: str) -> RoomView | None:
        """The event's room read from the database now, and kept: a room turned on by
        another process since this one's last refresh, known at once to a join."""
        canonical = canonical_id(event_id)
        room = None if canonical is None else await rooms.read_room(self._database, canonical)
        if room is None:
            return None
        view = self._view(room, await self._watermark(room, self._clock()))
        # A refresh or a tick that ran meanwhile has the newer view: keep it.
        return self._views.setdefault(room.event_id, view)

    async def start(self) -> None:
        """Load the signing secret and every room before serving, then keep them fresh."""
        secret = self._secret or await rooms.signing_secret(self._database, self._clock())
        self._signer = TicketSigner(secret, retired=self._retired)
        await self.refresh()
        if self._loops:
            return  # started already: its loops run
        loops = (
            ("refresh", self._refresh_seconds, self.refresh),
            ("tick", self._tick_seconds, self.tick),
        )
        self._loops = [
            Periodic(f"boxoffice-room-{name}", seconds, self._guarded(work))
            for name, seconds, work in loops
            if seconds > 0
        ]
        for loop in self._loops:
            loop.start()

    async def stop(self) -> None:
        """Let a pass under way finish (`boxoffice/periodic.py`), then stop the loops."""
        await self.joiner.stop()
        loops, self._loops = self._loops, []
        await asyncio.gather(*(loop.stop() for loop in loops))

    @staticmethod
    def _guarded(work: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """`work`, with an outage told apart from a bug: the last view is kept either way."""

        async def guarded() -> None:
            try:
                await work()
            except DatabaseUnavailable:
                log.warning("waiting_room_database_unavailable")
            except Exception:
                log.exception("waiting_room_loop_failed")

        return guarded

    async def refresh(self) -> None:
        """Read every room that is on, and the watermark steps taken since the last read."""
        now = self._clock()
        views: dict[str, RoomView] = {}
        for room in await rooms.read_rooms(self._database):
            watermark = await self._watermark(room, now)
            views[room.event_id] = self._view(room, watermark)
        for event_id in self._views.keys() - views.keys():
            # A room turned off has nobody in it: its last figures would read as a line
            # still waiting, for ever.
            QUEUE_WAITING.set(0, (event_id,))
            QUEUE_SHOPPING.set(0, (event_id,))
        self._views = views
        self._watermarks = {event: self._watermarks[event] for event in views}
        for event_id, view in views.items():
            if view.room.published is not None:
                QUEUE_WAITING.set(view.room.published.waiting, (event_id,))
                QUEUE_SHOPPING.set(view.room.published.shopping, (event_id,))

    async def _watermark(self, room: Room, now: datetime) -> Watermark:
        session_start = now - room.settings.session_duration
        known = self._watermarks.get(room.event_id)
        if known is None:
            floor, steps = await rooms.read_steps(
                self._database, room.event_id, after_key=-1, since=session_start
            )
            known = Watermark(floor=floor).merged(steps)
        elif room.watermark > known.key:
            _, steps = await rooms.read_steps(
                self._database, room.event_id, after_key=known.key, since=None
            )
            known = known.merged(steps)
        known = known.since(session_start)
        self._watermarks[room.event_id] = known
        return known

    def _view(self, room: Room, watermark: Watermark) -> RoomView:
        published = room.published
        # Before anyone is let in, the pace is the one the organizer set: a line told
        # "no idea, poll in 30 s" at the opening would learn of its turn late.
        pace = 0.0 if published is None else published.admitted_per_second
        if pace <= 0 and watermark.key == NOBODY:
            pace = room.settings.new_users_per_minute / 60
        snapshot = LineSnapshot(
            watermark=watermark,
            bands=() if published is None else published.bands,
            admitted_per_second=pace,
            session=room.settings.session_duration,
            sold_out=published is not None and published.sold_out,
            max_poll_seconds=self.max_poll_seconds,
            polls_per_wait=self._polls_per_wait,
            fastest_per_second=room.settings.moving_per_second,
            servable_places=None if published is None else published.servable_places,
        )
        return RoomView(room, snapshot)

    async def tick(self) -> None:
        """Let the next ones in, in every room whose lease this process holds or takes."""
        for event_id in list(self._views):
            room = await rooms.admit(
                self._database,
                event_id,
                holder=self._holder,
                now=self._clock(),
                lease=timedelta(seconds=max(1.0, self._tick_seconds * LEASE_TICKS)),
                clock_skew=self._clock_skew,
                shopper_grace=self._shopper_grace,
            )
            if room is None:
                continue
            if room.published is not None:
                QUEUE_ADMITTED.inc(amount=room.published.admitted_now)
            # This process sees its own step at once; the others at their next refresh.
            known = self._watermarks.get(event_id, Watermark())
            if room.watermark > known.key and room.published_at is not None:
                known = known.advanced(room.published_at, room.watermark)
            self._watermarks[event_id] = known
            if event_id in self._views:
                self._views[event_id] = self._view(room, known)
