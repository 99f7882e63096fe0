"""Checkout against real server processes: retries after a crash, and races between
processes (two workers), on both databases."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, inventory_check

pytestmark = pytest.mark.e2e


async def new_event(url: str, *capacities: int, cap: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Rush",
        "sections": [
            {"name": f"S{i}", "price": 5, "capacity": c} for i, c in enumerate(capacities)
        ],
    }
    if cap is not None:
        body["maxPerCustomer"] = cap
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/events", json=body)
        assert response.status_code == 201, response.text
        event: dict[str, Any] = response.json()
        return event


async def test_a_retry_after_the_server_died_before_answering_gets_the_first_booking(
    database_url: str, tmp_path: Path
) -> None:
    """The case idempotency keys exist for: the booking is committed, the server dies
    before it answers, the client retries with the same key on a new server."""
    dying = ServerProcess(
        database_url, log_dir=tmp_path, asgi_factory="tests.support.dying_app:create_dying_app"
    )
    with dying:
        event = await new_event(dying.url, 10)
        body = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 3}
        headers = {"Idempotency-Key": "order-42", "X-Die-After-Commit": "1"}
        async with httpx.AsyncClient(base_url=dying.url, timeout=30) as client:
            with pytest.raises(httpx.HTTPError):
                await client.post("/book", json=body, headers=headers)
        assert dying.process is not None
        assert dying.process.wait(timeout=30) == -9, "the server did not die"

    with ServerProcess(database_url, log_dir=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            retry = await client.post("/book", json=body, headers={"Idempotency-Key": "order-42"})
            assert retry.status_code == 201, retry.text
            stored = (await client.get("/bookings", params={"eventId": event["id"]})).json()
            seats = (await client.get(f"/events/{event['id']}")).json()["sections"][0]
    assert [b["id"] for b in stored] == [retry.json()["id"]], "booked twice, or not at all"
    assert (seats["remaining"], seats["sold"]) == (7, 3)
    assert inventory_check(database_url).returncode == 0


@pytest.fixture
def two_workers(database_url: str, tmp_path: Path) -> Any:
    env = {"HOLD_TTL_MIN_SECONDS": "1", "HOLD_SWEEP_INTERVAL_SECONDS": "0.2"}
    with ServerProcess(database_url, workers=2, log_dir=tmp_path, env=env) as server:
        yield server


def spread(url: str, count: int) -> list[httpx.AsyncClient]:
    """`count` clients with a connection each: requests land on both workers."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=0)
    return [httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for _ in range(count)]


async def test_20_concurrent_requests_with_one_key_across_processes_book_once(
    two_workers: ServerProcess, database_url: str
) -> None:
    event = await new_event(two_workers.url, 100)
    body = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 1}
    clients = spread(two_workers.url, 20)
    try:
        responses = await asyncio.gather(
            *(c.post("/book", json=body, headers={"Idempotency-Key": "same"}) for c in clients)
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {201, 409}, codes
    assert all(
        r.json()["code"] == "idempotency_in_progress" for r in responses if r.status_code == 409
    )
    assert all("retry-after" in r.headers for r in responses if r.status_code == 409)
    assert len({r.json()["id"] for r in responses if r.status_code == 201}) == 1
    async with httpx.AsyncClient(base_url=two_workers.url) as client:
        stored = (await client.get("/bookings", params={"eventId": event["id"]})).json()
    assert len(stored) == 1
    assert inventory_check(database_url).returncode == 0


async def test_50_parallel_requests_across_processes_never_pass_a_customer_cap(
    two_workers: ServerProcess, database_url: str
) -> None:
    event = await new_event(two_workers.url, 500, 500, cap=6)
    clients = spread(two_workers.url, 50)

    async def one(n: int, client: httpx.AsyncClient) -> httpx.Response:
        section = event["sections"][n % 2]["id"]
        if n % 3:
            body = {"eventId": event["id"], "sectionId": section, "qty": 1, "customerId": "greedy"}
            return await client.post("/book", json=body)
        hold = {"eventId": event["id"], "items": [{"sectionId": section, "qty": 2}],
                "customerId": "greedy"}  # fmt: skip
        return await client.post("/holds", json=hold)

    try:
        responses = await asyncio.gather(*(one(n, c) for n, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert {r.status_code for r in responses} <= {201, 409}
    assert all(
        r.json()["code"] == "customer_limit_exceeded" for r in responses if r.status_code == 409
    )
    taken = sum(
        r.json().get("qty") or sum(i["qty"] for i in r.json()["items"])
        for r in responses
        if r.status_code == 201
    )
    assert 5 <= taken <= 6
    assert inventory_check(database_url).returncode == 0


async def test_confirm_release_and_cancel_races_across_processes_have_one_winner(
    two_workers: ServerProcess, database_url: str
) -> None:
    event = await new_event(two_workers.url, 100)
    section = event["sections"][0]["id"]
    async with httpx.AsyncClient(base_url=two_workers.url, timeout=60) as client:
        holds = [
            (
                await client.post(
                    "/holds",
                    json={"eventId": event["id"], "items": [{"sectionId": section, "qty": 1}]},
                )
            ).json()
            for _ in range(10)
        ]
        booking = (
            await client.post(
                "/book", json={"eventId": event["id"], "sectionId": section, "qty": 2}
            )
        ).json()
    clients = spread(two_workers.url, 24)
    try:
        calls = []
        for n, hold in enumerate(holds):
            calls.append(clients[2 * n].post(f"/holds/{hold['id']}/confirm"))
            calls.append(clients[2 * n + 1].delete(f"/holds/{hold['id']}"))
        calls += [c.post(f"/bookings/{booking['id']}/cancel") for c in clients[20:24]]
        responses = await asyncio.gather(*calls)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    for n in range(len(holds)):
        confirm, release = responses[2 * n], responses[2 * n + 1]
        winners = [r for r in (confirm, release) if r.status_code in (201, 204)]
        assert len(winners) == 1, (confirm.text, release.text)
        loser = release if winners[0] is confirm else confirm
        assert (loser.status_code, loser.json()["code"]) == (409, "hold_not_active")
    cancels = responses[20:]
    assert {r.status_code for r in cancels} == {200}
    assert len({r.json()["cancelledAt"] for r in cancels}) == 1, "cancelled more than once"
    confirmed = sum(1 for n in range(len(holds)) if responses[2 * n].status_code == 201)
    async with httpx.AsyncClient(base_url=two_workers.url) as client:
        seats = (await client.get(f"/events/{event['id']}")).json()["sections"][0]
    assert (seats["remaining"], seats["held"], seats["sold"]) == (100 - confirmed, 0, confirmed)
    assert inventory_check(database_url).returncode == 0


async def test_confirm_racing_expiry_across_processes_has_one_winner(
    two_workers: ServerProcess, database_url: str
) -> None:
    """Holds of one second, confirmed right about when they expire, while both
    processes' sweepers run: each hold is confirmed (201) or expired (409), never both,
    and its seats are counted once."""
    event = await new_event(two_workers.url, 100)
    section = event["sections"][0]["id"]
    body = {"eventId": event["id"], "items": [{"sectionId": section, "qty": 1}], "ttlSeconds": 1}
    async with httpx.AsyncClient(base_url=two_workers.url, timeout=60) as client:
        holds = [(await client.post("/holds", json=body)).json() for _ in range(20)]
    await asyncio.sleep(0.9)
    clients = spread(two_workers.url, 20)
    try:
        responses = []
        for hold, client in zip(holds, clients, strict=True):
            responses.append(client.post(f"/holds/{hold['id']}/confirm"))
            await asyncio.sleep(0.01)  # spread over the moment of expiry
        answers = await asyncio.gather(*responses)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert {a.status_code for a in answers} <= {201, 409}
    assert all(a.json()["code"] == "hold_expired" for a in answers if a.status_code == 409)
    confirmed = sum(1 for a in answers if a.status_code == 201)
    await asyncio.sleep(0.5)  # the sweepers have given the expired seats back in the rows
    async with httpx.AsyncClient(base_url=two_workers.url) as client:
        seats = (await client.get(f"/events/{event['id']}")).json()["sections"][0]
        statuses = Counter(
            [(await client.get(f"/holds/{hold['id']}")).json()["status"] for hold in holds]
        )
    assert statuses == Counter({"confirmed": confirmed, "expired": 20 - confirmed}) + Counter()
    assert (seats["remaining"], seats["held"], seats["sold"]) == (100 - confirmed, 0, confirmed)
    assert inventory_check(database_url).returncode == 0
