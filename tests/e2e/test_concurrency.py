"""The core promise against real server processes, real concurrent clients, both databases."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, audit_verify, inventory_check

pytestmark = pytest.mark.e2e

CAPACITY = 97
# How long the kill test may take to reach its load; a stuck server fails it then.
LOAD_DEADLINE_SECONDS = 60.0


@pytest.fixture(params=["direct", "batched"])
def server(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[ServerProcess]:
    env = {"BOOKING_STRATEGY": request.param}
    with ServerProcess(database_url, workers=2, log_dir=tmp_path, env=env) as running:
        yield running


async def create_event(base_url: str, capacity: int = CAPACITY) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post(
            "/events/create",
            json={"name": "Rush", "sections": [{"name": "GA", "price": 5, "capacity": capacity}]},
        )
        assert response.status_code == 201, response.text
        event = response.json()
        return event["id"], event["sections"][0]["id"]


async def race(
    urls: list[str], event_id: str, section_id: str, wanted: list[int]
) -> list[tuple[int, httpx.Response | Exception]]:
    """Fire every request at once, spread over `urls`, each on its own connection."""
    limits = httpx.Limits(max_connections=len(wanted), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(index: int, qty: int) -> tuple[int, httpx.Response | Exception]:
            url = urls[index % len(urls)]
            try:
                response = await client.post(
                    f"{url}/book", json={"eventId": event_id, "sectionId": section_id, "qty": qty}
                )
            except httpx.HTTPError as error:
                return qty, error
            return qty, response

        return await asyncio.gather(*(one(i, qty) for i, qty in enumerate(wanted)))


async def final_state(base_url: str, event_id: str) -> tuple[int, dict[str, int]]:
    """(remaining, {booking id: qty}) as the API reports them."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        event = await client.get(f"/events/{event_id}")
        assert event.status_code == 200, event.text
        remaining = event.json()["sections"][0]["remaining"]
        stored: dict[str, int] = {}
        next_url: str | None = f"/bookings?eventId={event_id}&limit=1000"
        while next_url:
            page = await client.get(next_url)
            assert page.status_code == 200, page.text
            stored.update({b["id"]: b["qty"] for b in page.json()})
            next_url = page.links.get("next", {}).get("url")
    return remaining, stored


def is_sold_out(answer: httpx.Response | Exception) -> bool:
    """The one refusal a rush may get: a 400 `insufficient_seats`."""
    return (
        isinstance(answer, httpx.Response)
        and answer.status_code == 400
        and answer.json().get("code") == "insufficient_seats"
    )


def assert_no_oversell_no_leak(
    results: list[tuple[int, Any]], remaining: int, stored: dict[str, int], capacity: int
) -> None:
    confirmed = {
        r.json()["id"]: qty
        for qty, r in results
        if isinstance(r, httpx.Response) and r.status_code == 201
    }
    refused = [qty for qty, r in results if is_sold_out(r)]
    others = [
        (qty, r if isinstance(r, Exception) else f"{r.status_code} {r.text}")
        for qty, r in results
        if not (is_sold_out(r) or (isinstance(r, httpx.Response) and r.status_code == 201))
    ]
    assert others == [], "requests failed for other reasons than sold out"
    assert remaining >= 0
    assert sum(confirmed.values()) + remaining == capacity, "oversold or leaked seats"
    assert stored == confirmed, "stored bookings differ from the confirmed ones"
    assert all(qty > remaining for qty in refused), "a refusal was not justified"


async def test_200_concurrent_clients_two_workers_97_seats(server: ServerProcess) -> None:
    event_id, section_id = await create_event(server.url)
    rng = random.Random(2)
    wanted = [rng.randint(1, 4) for _ in range(200)]
    results = await race([server.url], event_id, section_id, wanted)
    remaining, stored = await final_state(server.url, event_id)
    assert_no_oversell_no_leak(results, remaining, stored, CAPACITY)
    assert remaining < min(wanted) or remaining == 0


async def test_two_separate_servers_on_one_database(database_url: str, tmp_path: Path) -> None:
    with (
        ServerProcess(database_url, log_dir=tmp_path) as first,
        ServerProcess(database_url, log_dir=tmp_path) as second,
    ):
        event_id, section_id = await create_event(first.url, capacity=50)
        wanted = [1 + i % 3 for i in range(120)]
        results = await race([first.url, second.url], event_id, section_id, wanted)
        remaining, stored = await final_state(second.url, event_id)
    assert_no_oversell_no_leak(results, remaining, stored, 50)


# When every server process is killed: (bookings, holds) answered before the kill, and
# whether a SIGTERM came first (the kill lands while the server drains its requests).
KILL_POINTS = {
    "at the first answers": (6, 2, False),
    "mid-sale": (150, 50, False),
    "while draining after SIGTERM": (150, 50, True),
}


@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
async def test_kill_9_under_load_leaks_no_seat(
    database_url: str, tmp_path: Path, kill_point: str
) -> None:
    """The original leaked about 37 seats per kill; here a kill loses only unanswered requests.

    Bookings, holds and confirmations run at once when every server process is killed,
    at several points of a sale; after a restart every acknowledged booking and hold is
    there as it was answered, the seats add up, `boxoffice check` passes (audit trail
    included), and the restarted server sells on: nothing to repair by hand.
    """
    want_booked, want_held, terminate_first = KILL_POINTS[kill_point]
    capacity = 100_000
    server = ServerProcess(database_url, workers=2, log_dir=tmp_path).start()
    try:
        event_id, section_id = await create_event(server.url, capacity=capacity)
        booked: dict[str, int] = {}
        held: dict[str, str] = {}  # hold id -> status as last answered
        # With 100,000 seats and holds of the default TTL nothing is refused: any other
        # answer than a 201 is wrong, except a 503 of the server dying (after the kill).
        unexpected: list[str] = []
        killed = asyncio.Event()

        def answered(response: httpx.Response) -> bool:
            if response.status_code == 201:
                return True
            if response.status_code == 503 and response.json()["code"] == "overloaded":
                return False  # never started, nothing written: a client retries it
            if not (killed.is_set() and response.status_code == 503):
                unexpected.append(
                    f"{response.request.url.path}: {response.status_code} {response.text}"
                )
            return False

        def failed(error: httpx.HTTPError) -> None:
            if not killed.is_set():  # after the kill, a reset connection is what we expect
                unexpected.append(f"{error.request.url.path}: {error!r}")

        async def booking_loop(client: httpx.AsyncClient) -> None:
            while not killed.is_set():
                try:
                    response = await client.post(
                        f"{server.url}/book",
                        json={"eventId": event_id, "sectionId": section_id, "qty": 2},
                    )
                except httpx.HTTPError as error:
                    failed(error)
                    return
                if answered(response):
                    booked[response.json()["id"]] = 2

        async def checkout_loop(client: httpx.AsyncClient) -> None:
            hold = {"eventId": event_id, "items": [{"sectionId": section_id, "qty": 1}]}
            while not killed.is_set():
                try:
                    placed = await client.post(f"{server.url}/holds", json=hold)
                    if not answered(placed):
                        continue
                    hold_id = placed.json()["id"]
                    held[hold_id] = "active"
                    confirmed = await client.post(f"{server.url}/holds/{hold_id}/confirm")
                except httpx.HTTPError as error:
                    failed(error)
                    return
                if answered(confirmed):
                    held[hold_id] = "confirmed"
                    for booking in confirmed.json()["bookings"]:
                        booked[booking["id"]] = booking["qty"]

        async with httpx.AsyncClient(timeout=10) as client:
            loops = [asyncio.create_task(booking_loop(client)) for _ in range(16)]
            loops += [asyncio.create_task(checkout_loop(client)) for _ in range(16)]
            deadline = time.monotonic() + LOAD_DEADLINE_SECONDS
            try:
                while len(booked) < want_booked or len(held) < want_held:
                    assert not unexpected, f"before the kill: {unexpected[:5]}"
                    assert not all(loop.done() for loop in loops), "every client gave up"
                    assert time.monotonic() < deadline, (
                        f"{len(booked)} bookings and {len(held)} holds answered in "
                        f"{LOAD_DEADLINE_SECONDS} s: the server is stuck"
                    )
                    await asyncio.sleep(0.02)
            finally:
                killed.set()
                if terminate_first and server.process is not None:
                    server.process.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.3)
                server.kill()
                ended = await asyncio.gather(*loops, return_exceptions=True)
            assert not [e for e in ended if e is not None], ended
            assert not unexpected, unexpected[:5]
    finally:
        server.kill()

    with ServerProcess(database_url, log_dir=tmp_path) as restarted:
        _, stored = await final_state(restarted.url, event_id)
        async with httpx.AsyncClient(base_url=restarted.url, timeout=30) as client:
            section = (await client.get(f"/events/{event_id}")).json()["sections"][0]
            statuses = {
                hold_id: (await client.get(f"/holds/{hold_id}")).json().get("status")
                for hold_id in held
            }
            sells_on = await client.post(
                "/book", json={"eventId": event_id, "sectionId": section_id, "qty": 1}
            )
    assert sells_on.status_code == 201, sells_on.text  # read before: not in the counts above
    assert section["remaining"] + section["held"] + section["sold"] == capacity
    assert section["sold"] == sum(stored.values()), "a seat leaked through the kill"
    assert set(booked) <= set(stored), "an acknowledged booking was lost"
    assert all(statuses[h] == "confirmed" for h, s in held.items() if s == "confirmed")
    assert all(statuses[h] in ("active", "confirmed") for h in held), "a hold was lost"
    verify = audit_verify(database_url)
    assert verify.returncode == 0, verify.stdout
    check = inventory_check(database_url)
    assert check.returncode == 0, check.stdout
