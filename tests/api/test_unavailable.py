"""What a client sees when the service cannot do its work: 503 `service_unavailable` and
`overloaded` with Retry-After, `/readyz` 503 while the booking committer is down, and the
500 `internal_error` body, over HTTP on SQLite and PostgreSQL.

The database really stopping and starting under load is in
tests/e2e/test_database_outage.py; these take each cause apart, in-process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from boxoffice.api.app import create_app
from boxoffice.booking import BatchedBooker
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.domain.commands import Command
from boxoffice.observability import metrics
from tests.api.conftest import EVENT, assert_problem, create
from tests.support.keys import bearer


@pytest.fixture
async def served(
    settings: Settings, database: Database
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (to reach its booker) and an admin's client, with a short queue timeout."""
    app = create_app(settings.model_copy(update={"booking_queue_timeout_ms": 200}), database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=await bearer(database)
        ) as http:
            yield app, http


def _queue_waits() -> tuple[float, float]:
    """Commands whose wait in the booking queue was counted: all, and those within 100 ms."""
    metrics.flush()
    name = "boxoffice_booking_queue_wait_seconds"
    return (
        REGISTRY.get_sample_value(f"{name}_count") or 0.0,
        REGISTRY.get_sample_value(f"{name}_bucket", {"le": "0.1"}) or 0.0,
    )


def book(event: dict[str, Any], qty: int = 1) -> dict[str, Any]:
    return {"eventId": event["id"], "sectionId": event["sections"][1]["id"], "qty": qty}


async def remaining(client: httpx.AsyncClient, event: dict[str, Any]) -> int:
    found = (await client.get(f"/events/{event['id']}")).json()
    return int(found["sections"][1]["remaining"])


async def test_a_dead_committer_answers_503_and_readyz_is_not_ready_until_it_runs_again(
    served: tuple[FastAPI, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = served
    booker: BatchedBooker = app.state.booker
    event = await create(client, EVENT)
    assert (await client.get("/readyz")).status_code == 200
    # A bug in the committer loop itself (not a database failure, which fails one batch).
    original = booker._commit
    calls = 0

    async def dies_once(batch: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the committer")
        await original(batch)

    monkeypatch.setattr(booker, "_commit", dies_once)
    monkeypatch.setattr(booker, "_restart_delay", 2.0)  # room to look before it is back

    failed = await client.post("/book", json=book(event))
    assert_problem(failed, 503, "service_unavailable")
    assert failed.headers["retry-after"] == "1"
    assert not booker.ready
    not_ready = await client.get("/readyz")
    assert_problem(not_ready, 503, "service_unavailable")
    assert not_ready.headers["retry-after"] == "1"
    refused = await client.post("/book", json=book(event))
    assert_problem(refused, 503, "service_unavailable")
    assert await remaining(client, event) == 100, "a refused booking took seats"

    deadline = time.monotonic() + 30
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "the committer was never restarted"
        await asyncio.sleep(0.1)
    booked = await client.post("/book", json=book(event, 2))
    assert booked.status_code == 201, booked.text
    assert await remaining(client, event) == 98


async def test_a_request_the_queue_cannot_reach_in_time_is_overloaded_and_writes_nothing(
    served: tuple[FastAPI, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch is held in flight past BOOKING_QUEUE_TIMEOUT_MS (200 ms): the bookings
    queued behind it are answered 503 `overloaded` when their time is up, not when the
    batch ends, and none of them is written; the held one is committed."""
    app, client = served
    booker: BatchedBooker = app.state.booker
    event = await create(client, EVENT)
    release = asyncio.Event()
    entered = asyncio.Event()
    original = booker._apply

    async def held_first(commands: Sequence[Command]) -> Any:
        if not entered.is_set():
            entered.set()
            await release.wait()
        return await original(commands)

    monkeypatch.setattr(booker, "_apply", held_first)
    first = asyncio.create_task(client.post("/book", json=book(event, 3)))
    await asyncio.wait_for(entered.wait(), 30)
    waited_before = _queue_waits()  # the batch in flight counted already
    queued = [asyncio.create_task(client.post("/book", json=book(event))) for _ in range(5)]
    await asyncio.sleep(0.1)  # a second wave, with later deadlines: the watch moves on to it
    queued += [asyncio.create_task(client.post("/book", json=book(event))) for _ in range(3)]
    done, _ = await asyncio.wait(queued, timeout=30)
    assert len(done) == 8, "queued requests waited for the batch in flight"
    assert not first.done()
    for answer in queued:
        body = assert_problem(answer.result(), 503, "overloaded")
        assert "nothing was written" in body["detail"]
        assert answer.result().headers["retry-after"] == "1"
    waited = [now - then for now, then in zip(_queue_waits(), waited_before, strict=True)]
    assert waited == [8, 0], "each refused request's wait is counted, each past 100 ms"
    release.set()
    assert (await first).status_code == 201
    assert await remaining(client, event) == 97
    assert (await client.get("/readyz")).status_code == 200
    again = await client.post("/book", json=book(event))
    assert again.status_code == 201, "the queue stayed refused after the load passed"


async def test_database_unavailable_on_readyz_is_503_with_retry_after(
    served: tuple[FastAPI, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = served

    async def refused() -> None:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(app.state.database, "ping", refused)
    answer = await client.get("/readyz")
    assert_problem(answer, 503, "service_unavailable")
    assert answer.headers["retry-after"] == "1"
    assert "refused" not in answer.text, "the driver's error leaked into the body"


async def test_an_unexpected_error_is_a_500_problem_without_internals(
    served: tuple[FastAPI, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = served
    event = await create(client, EVENT)

    async def broken(command: Command) -> Any:
        raise KeyError("secret_internal_detail")

    monkeypatch.setattr(app.state.booker, "submit", broken)
    answer = await client.post("/book", json=book(event))
    body = assert_problem(answer, 500, "internal_error")
    assert body["detail"] == "An unexpected error occurred."
    assert "secret_internal_detail" not in answer.text
    assert "KeyError" not in answer.text


async def test_a_key_that_cannot_be_looked_up_is_503_not_500(
    settings: Settings, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key check runs below FastAPI's error handlers: a database that cannot serve the
    lookup (a pool drained by a storm of new keys, in `make onsale`) is a 503 with
    Retry-After there too, and the next request, once it can, goes through."""
    from boxoffice.db.errors import DatabaseUnavailable
    from boxoffice.services import keys

    made = await bearer(database, "customer", customer_id="gina")
    original = keys.find_keys

    async def drained(database: Database, tokens: object) -> None:
        raise DatabaseUnavailable("QueuePool limit reached") from TimeoutError()

    app = create_app(settings, database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            monkeypatch.setattr(keys, "find_keys", drained)
            answer = await http.get("/bookings", headers=made)
            assert_problem(answer, 503, "service_unavailable")
            assert answer.headers["retry-after"] == "1"
            assert "QueuePool" not in answer.text
            monkeypatch.setattr(keys, "find_keys", original)
            assert (await http.get("/bookings", headers=made)).status_code == 200
