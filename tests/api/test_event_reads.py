"""GET /events/{id} during a read storm (issue 12): answered from the process's availability
cache, at most AVAILABILITY_MAX_STALENESS_MS old, one database read per event however many
ask at once, ETag and 304; booking still decides on the live count. On SQLite and PostgreSQL,
with the app's clock moved by the test.

Database reads are counted where they happen: a SQLAlchemy hook on the readers' engine
sees every statement that reads an event by id (the cache is not asked what it did).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event as sqlalchemy_event

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.domain.ids import new_id
from boxoffice.services import events as event_service
from boxoffice.services.clock import FakeClock
from tests.api.conftest import EVENT, assert_problem
from tests.support.keys import bearer

READ_BY_ID = re.compile(r"FROM events\s+WHERE events\.id\b")


class EventReads:
    """Statements that read an event by id, counted on an engine's connections."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if READ_BY_ID.search(statement):
            self.count += 1


@contextmanager
def counting_event_reads(database: Database) -> Iterator[EventReads]:
    reads = EventReads()
    engine = database.engine.sync_engine
    sqlalchemy_event.listen(engine, "before_cursor_execute", reads)
    try:
        yield reads
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", reads)


@asynccontextmanager
async def serving(
    settings: Settings, database: Database, clock: FakeClock, **changes: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An app (one server process's worth) on `database`, with an admin key."""
    quiet = settings.model_copy(update={"hold_sweep_interval_seconds": 0, **changes})
    app = create_app(quiet, database, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = await bearer(database)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            yield http


@asynccontextmanager
async def another_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A second app with its own engine, booker and cache on the same database: what another
    server process does to the seats, the first one learns only from the database."""
    database = Database.from_settings(settings)
    try:
        async with serving(settings, database, FakeClock()) as http:
            yield http
    finally:
        await database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(
    settings: Settings, database: Database, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings, database, clock) as http:
        yield http


async def create_event(http: httpx.AsyncClient) -> dict[str, Any]:
    made = await http.post("/events", json=EVENT)  # VIP: 5 seats, GA: 100
    assert made.status_code == 201, made.text
    event: dict[str, Any] = made.json()
    return event


def book(event: dict[str, Any], qty: int, section: int = 0) -> dict[str, Any]:
    return {"eventId": event["id"], "sectionId": event["sections"][section]["id"], "qty": qty}


def hold(event: dict[str, Any], qty: int, section: int = 0) -> dict[str, Any]:
    items = [{"sectionId": event["sections"][section]["id"], "qty": qty}]
    return {"eventId": event["id"], "items": items}


def seats(answer: httpx.Response) -> list[tuple[int, int, int]]:
    assert answer.status_code == 200, answer.text
    return [(s["remaining"], s["held"], s["sold"]) for s in answer.json()["sections"]]


def remaining(answer: httpx.Response) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [section["remaining"] for section in answer.json()["sections"]]


async def test_within_the_bound_the_cached_answer_past_it_a_fresh_one(
    settings: Settings, database: Database, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    event = await create_event(client)
    path = f"/events/{event['id']}"
    with counting_event_reads(database) as reads:
        first = await client.get(path)
        assert remaining(first) == [5, 100]
        assert reads.count == 1
        async with another_process(settings) as other:
            assert (await other.post("/book", json=book(event, 2))).status_code == 201
        reads.count = 0  # the other process's own reads are not this one's
        clock.advance(0.499)
        stale = await client.get(path)
        assert stale.content == first.content  # kept: the other process's sale not seen yet
        assert reads.count == 0
        clock.advance(0.001)  # 500 ms since the read began: too old
        assert remaining(await client.get(path)) == [3, 100]
        assert reads.count == 1
        assert remaining(await client.get(path)) == [3, 100]
        assert reads.count == 1


async def test_a_clock_stepped_back_makes_the_entry_stale(
    database: Database, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    event = await create_event(client)
    with counting_event_reads(database) as reads:
        await client.get(f"/events/{event['id']}")
        clock.advance(-1)
        await client.get(f"/events/{event['id']}")
        assert reads.count == 2


async def test_concurrent_requests_for_a_cold_event_make_one_database_read(
    database: Database, client: httpx.AsyncClient
) -> None:
    event = await create_event(client)
    await client.get("/events")  # the admin key is checked and kept before the storm
    with counting_event_reads(database) as reads:
        answers = await asyncio.gather(*(client.get(f"/events/{event['id']}") for _ in range(50)))
        assert reads.count == 1
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.content for answer in answers}) == 1
    assert remaining(answers[0]) == [5, 100]


async def test_an_unknown_event_is_read_once_per_storm_and_never_kept(
    settings: Settings, database: Database, client: httpx.AsyncClient, monkeypatch: Any
) -> None:
    """A 404 answers everyone waiting for that read, and is forgotten: an event created on
    another process a moment later is found at once, the clock not moved."""
    ident = uuid.uuid4()
    path = f"/events/{ident}"
    await client.get("/events")
    with counting_event_reads(database) as reads:
        answers = await asyncio.gather(*(client.get(path) for _ in range(20)))
        for answer in answers:
            assert_problem(answer, 404, "not_found")
            assert answer.headers["cache-control"] == "no-store"
            assert "etag" not in answer.headers
        assert reads.count == 1

    ids = iter([ident])
    monkeypatch.setattr(event_service, "new_id", lambda: next(ids, None) or new_id())
    async with another_process(settings) as other:
        made = await other.post("/events", json=EVENT)
        assert made.json()["id"] == str(ident)
    assert remaining(await client.get(path)) == [5, 100]
    # Any spelling of the id is the same event, read once.
    with counting_event_reads(database) as reads:
        assert remaining(await client.get(f"/events/{str(ident).upper()}")) == [5, 100]
        assert reads.count == 0


async def test_etag_and_if_none_match(client: httpx.AsyncClient) -> None:
    event = await create_event(client)
    path = f"/events/{event['id']}"
    first = await client.get(path)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)  # strong: a digest of the body
    assert first.headers["cache-control"] == "public, max-age=0, must-revalidate"
    assert first.headers["content-type"] == "application/json"

    for asked in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        unchanged = await client.get(path, headers={"If-None-Match": asked})
        assert unchanged.status_code == 304, asked
        assert unchanged.content == b""
        assert "content-type" not in unchanged.headers
        assert unchanged.headers["etag"] == etag
        assert unchanged.headers["cache-control"] == first.headers["cache-control"]
    other = await client.get(path, headers={"If-None-Match": '"other"'})
    assert other.status_code == 200
    assert other.content == first.content

    # This process's own sale drops its entry: the next read is fresh, with a new tag.
    assert (await client.post("/book", json=book(event, 1))).status_code == 201
    changed = await client.get(path, headers={"If-None-Match": etag})
    assert remaining(changed) == [4, 100]
    assert changed.headers["etag"] not in (etag, "")
    again = await client.get(path, headers={"If-None-Match": changed.headers["etag"]})
    assert again.status_code == 304


async def test_max_age_is_what_is_left_of_the_bound_in_whole_seconds(
    settings: Settings, database: Database, clock: FakeClock
) -> None:
    async with serving(settings, database, clock, availability_max_staleness_ms=2500) as http:
        event = await create_event(http)
        path = f"/events/{event['id']}"
        ages = []
        for step in (0, 0.6, 1.0, 0.8):  # 0, 0.6, 1.6 and 2.4 s after the read
            clock.advance(step)
            ages.append((await http.get(path)).headers["cache-control"])
        clock.advance(0.1)  # 2.5 s: read again, 2 whole seconds left
        ages.append((await http.get(path)).headers["cache-control"])
    assert [re.sub(r"public, max-age=(\d+), must-revalidate", r"\1", a) for a in ages] == [
        "2",
        "1",
        "0",
        "0",
        "2",
    ]


@pytest.mark.parametrize("booking_strategy", ["direct", "batched"])
async def test_this_process_sees_its_own_purchases_at_once(
    database: Database, client: httpx.AsyncClient
) -> None:
    event = await create_event(client)
    path = f"/events/{event['id']}"
    assert remaining(await client.get(path)) == [5, 100]
    booked = await client.post("/book", json=book(event, 2))
    assert booked.status_code == 201
    assert seats(await client.get(path)) == [(3, 0, 2), (100, 0, 0)]
    released = await client.post("/holds", json=hold(event, 4, section=1))
    assert released.status_code == 201
    assert seats(await client.get(path)) == [(3, 0, 2), (96, 4, 0)]
    assert (await client.delete(f"/holds/{released.json()['id']}")).status_code == 204
    assert seats(await client.get(path)) == [(3, 0, 2), (100, 0, 0)]
    paid = await client.post("/holds", json=hold(event, 1))
    assert paid.status_code == 201
    assert seats(await client.get(path)) == [(2, 1, 2), (100, 0, 0)]
    assert (await client.post(f"/holds/{paid.json()['id']}/confirm")).status_code == 201
    assert seats(await client.get(path)) == [(2, 0, 3), (100, 0, 0)]
    cancelled = await client.post(f"/bookings/{booked.json()['id']}/cancel")
    assert cancelled.status_code == 200
    with counting_event_reads(database) as reads:
        assert seats(await client.get(path)) == [(4, 0, 1), (100, 0, 0)]
        assert seats(await client.get(path)) == [(4, 0, 1), (100, 0, 0)]
        assert reads.count == 1  # read again once after the write, then kept


@pytest.mark.parametrize("booking_strategy", ["direct", "batched"])
async def test_booking_decides_on_the_live_count_whatever_the_cache_shows(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    event = await create_event(client)
    path = f"/events/{event['id']}"
    # This process books first, so that its booker knows the section too (PostgreSQL's
    # batched path remembers sections and writes from memory when nothing has changed).
    assert (await client.post("/book", json=book(event, 1))).status_code == 201
    assert remaining(await client.get(path)) == [4, 100]
    async with another_process(settings) as other:
        sold_out = await other.post("/book", json=book(event, 4))
        assert sold_out.status_code == 201
    assert remaining(await client.get(path)) == [4, 100]  # stale, within the bound

    refused = await client.post("/book", json=book(event, 1))
    problem = assert_problem(refused, 400, "insufficient_seats")
    assert problem["remaining"] == 0
    assert_problem(await client.post("/holds", json=hold(event, 1)), 400, "insufficient_seats")
    # The refusals were this process's writes to the event: its next read is live.
    assert remaining(await client.get(path)) == [0, 100]


async def test_cache_off_reads_the_database_every_time_as_before(
    settings: Settings, database: Database, clock: FakeClock, client: httpx.AsyncClient
) -> None:
    event = await create_event(client)
    path = f"/events/{event['id']}"
    cached = await client.get(path)
    async with serving(settings, database, clock, availability_max_staleness_ms=0) as off:
        with counting_event_reads(database) as reads:
            answers = [await off.get(path, headers={"If-None-Match": "*"}) for _ in range(3)]
            assert reads.count == 3
            answers += await asyncio.gather(*(off.get(path) for _ in range(5)))
            assert reads.count == 8
        for answer in answers:
            assert answer.status_code == 200
            assert "etag" not in answer.headers
            assert answer.headers["cache-control"] == "no-store"
            # The cached path's body is byte for byte what FastAPI sends for the model.
            assert answer.content == cached.content
        assert_problem(await off.get(f"/events/{uuid.uuid4()}"), 404, "not_found")
        assert_problem(await off.get("/events/abc"), 404, "not_found")
