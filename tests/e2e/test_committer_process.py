"""PostgreSQL's shared committer in a real server: one for all workers, restarted if it dies,
stopped after the workers (booking/committer_process.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_concurrency import create_event, final_state
from tests.support.server import (
    ServerProcess,
    committer_processes,
    inventory_check,
    process_group,
)

pytestmark = pytest.mark.e2e


def committers(server: ServerProcess) -> list[int]:
    assert server.process is not None
    return committer_processes(server.process.pid)


async def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def every_kind_of_command(url: str) -> None:
    """Each command, its result and its refusals, across the link and back (pickled)."""
    event_id, section_id = await create_event(url, capacity=10)
    item = {"sectionId": section_id, "qty": 2}
    one = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=one) as client:
        hold = await client.post("/holds", json={"eventId": event_id, "items": [item]})
        assert hold.status_code == 201, hold.text
        confirmed = await client.post(f"/holds/{hold.json()['id']}/confirm")
        assert confirmed.status_code == 201, confirmed.text
        again = await client.post(f"/holds/{hold.json()['id']}/confirm")
        assert (again.status_code, again.json()["code"]) == (409, "hold_not_active")
        released = await client.post("/holds", json={"eventId": event_id, "items": [item]})
        before = (await client.get(f"/events/{event_id}")).json()["sections"][0]["remaining"]
        gone = await client.delete(f"/holds/{released.json()['id']}")
        assert gone.status_code == 204, gone.text
        # One connection, so one worker: its cached availability (kept 10 s here) was
        # dropped with the answer, though the release named only the hold, not its event.
        after = (await client.get(f"/events/{event_id}")).json()["sections"][0]["remaining"]
        assert after == before + 2, (before, after)
        unknown = await client.delete("/holds/01a23fac-9607-7534-8e5b-000000000000")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
        [booking] = [b["id"] for b in confirmed.json()["bookings"]]
        cancelled = await client.post(f"/bookings/{booking}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        body = {"eventId": event_id, "sectionId": section_id, "qty": 3}
        keyed = {"Idempotency-Key": "once"}
        first = await client.post("/book", json=body, headers=keyed)
        retried = await client.post("/book", json=body, headers=keyed)
        assert first.status_code == 201, first.text
        assert (retried.status_code, retried.json()["id"]) == (201, first.json()["id"])
        too_many = await client.post("/book", json={**body, "qty": 8})
        assert (too_many.status_code, too_many.json()["code"]) == (400, "insufficient_seats")
    remaining, stored = await final_state(url, event_id)
    assert (remaining, sorted(stored.values())) == (7, [2, 3])  # the 2 cancelled


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("setting", ["process", "worker"])
async def test_the_workers_share_one_committer_and_it_stops_after_them(
    database_url: str, tmp_path: Path, setting: str
) -> None:
    env = {"BOOKING_COMMITTER": setting, "AVAILABILITY_MAX_STALENESS_MS": "10000"}
    server = ServerProcess(database_url, workers=2, env=env, log_dir=tmp_path).start()
    try:
        assert server.process is not None
        pgid = server.process.pid
        assert len(committers(server)) == (1 if setting == "process" else 0)
        event_id, section_id = await create_event(server.url, capacity=30)
        body = {"eventId": event_id, "sectionId": section_id, "qty": 1}
        limits = httpx.Limits(max_connections=40, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
            answers = await asyncio.gather(*(client.post("/book", json=body) for _ in range(40)))
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201] * 30 + [400] * 10, statuses
        await every_kind_of_command(server.url)
        # A service manager's SIGTERM reaches the whole group, the committer included: it
        # outlives the workers until they have drained, then leaves with the server.
        server.stop()
        assert "Traceback" not in server.log(), server.log()
        await wait_for(lambda: not process_group(pgid), "every process of the server to exit")
    finally:
        server.kill()
    with ServerProcess(database_url, log_dir=tmp_path) as restarted:
        remaining, stored = await final_state(restarted.url, event_id)
    assert (remaining, len(stored)) == (0, 30)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_killed_committer_is_started_again_and_no_seat_is_lost(
    database_url: str, tmp_path: Path
) -> None:
    capacity = 20_000  # more than 20 clients buy in 4 s: no refusal but the 503s
    env = {"BOOKING_COMMITTER": "process"}
    with ServerProcess(database_url, workers=2, env=env, log_dir=tmp_path) as server:
        [first] = committers(server)
        event_id, section_id = await create_event(server.url, capacity=capacity)
        body = {"eventId": event_id, "sectionId": section_id, "qty": 1}
        answers: list[httpx.Response] = []
        stop_at = time.monotonic() + 4.0

        async def customer(client: httpx.AsyncClient) -> None:
            while time.monotonic() < stop_at:
                answers.append(await client.post("/book", json=body))

        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            buyers = asyncio.gather(*(customer(client) for _ in range(20)))
            await asyncio.sleep(1.0)
            os.kill(first, signal.SIGKILL)  # mid-rush: batches in flight, commands queued
            await buyers
            # The supervisor starts another within a tick; the workers find it themselves.
            await wait_for(lambda: committers(server) not in ([], [first]), "a new committer")
            await wait_for(
                lambda: httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200,
                "ready again",
            )
            after = await client.post("/book", json=body)
            assert after.status_code == 201, after.text

        statuses = {answer.status_code for answer in answers}
        # In flight when it died: 503 (committed or not: the database decides, and the
        # count below says nothing leaked); never a 500.
        assert statuses <= {201, 503}, statuses
        assert 503 in statuses, statuses
        assert 201 in statuses, statuses
        unavailable = [a.json()["code"] for a in answers if a.status_code == 503]
        assert set(unavailable) == {"service_unavailable"}, set(unavailable)
        remaining, stored = await final_state(server.url, event_id)
        sold = [answer.json()["id"] for answer in answers if answer.status_code == 201]
        assert set(sold) | {after.json()["id"]} <= set(stored)  # every 201 is stored
        assert remaining + sum(stored.values()) == capacity  # nothing oversold or leaked
        assert "committer_died" in server.log()
        assert "Traceback" not in server.log(), server.log()
    checked = inventory_check(database_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
