"""Two servers on one PostgreSQL database share one line: tickets from either are good on
the other; when the server running the admission loop dies, the other takes over once
its lease lapses; a server started again reads the line back. Nobody loses their place."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, inventory_check

pytestmark = pytest.mark.e2e

CUSTOMERS = 9
OPENS_IN = timedelta(seconds=15)  # time enough to start the second server and join
ENV = {
    "WAITING_ROOM_TICK_MS": "200",
    "WAITING_ROOM_REFRESH_MS": "100",
    "WAITING_ROOM_CLOCK_SKEW_MS": "0",
}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_servers_share_the_line_and_survive_losing_the_admitting_one(
    database_url: str, tmp_path: Path
) -> None:
    first = ServerProcess(database_url, log_dir=tmp_path, env=ENV).start()
    second: ServerProcess | None = None
    try:
        event = httpx.post(
            f"{first.url}/events",
            json={"name": "Two doors", "sections": [{"name": "GA", "price": 20, "capacity": 100}]},
        ).json()
        opens = datetime.now(UTC) + OPENS_IN
        room = httpx.put(
            f"{first.url}/events/{event['id']}/waiting-room",
            json={
                "newUsersPerMinute": 1000,
                "totalActiveUsers": 1000,
                "prequeueOpensAt": (opens - timedelta(minutes=5)).isoformat(),
                "opensAt": opens.isoformat(),
            },
        )
        assert room.status_code == 200, room.text
        # The first server's admission loop takes the room's lease before the second starts.
        figures_at = wait_for_figures(first, event)
        second = ServerProcess(database_url, log_dir=tmp_path, env=ENV).start()
        tickets = {}
        for n in range(CUSTOMERS):
            door = (first, second)[n % 2]
            joined = httpx.post(
                f"{door.url}/events/{event['id']}/queue", json={"customerId": f"c{n}"}
            )
            assert joined.status_code == 201, joined.text
            assert joined.json()["status"] == "waiting"
            tickets[f"c{n}"] = joined.json()["ticket"]
        assert datetime.now(UTC) < opens, "the set-up took longer than OPENS_IN"
        first.kill()  # the lease holder dies before the opening

        admitted = wait_for_admissions(second, tickets)  # tickets of both servers
        assert wait_for_figures(second, event) > figures_at  # the second one admits now
        for customer in ("c0", "c1", "c2"):
            buy(second, event, customer, admitted[customer])

        restarted = ServerProcess(database_url, log_dir=tmp_path, env=ENV).start()
        try:
            # A server started again reads the line back: same places, tokens still good.
            answer = httpx.get(f"{restarted.url}/queue/{tickets['c8']}").json()
            assert answer["status"] == "admitted"
            buy(restarted, event, "c8", answer["admissionToken"])
            buy(restarted, event, "c7", admitted["c7"])
        finally:
            restarted.stop()
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert inventory_check(database_url).returncode == 0


def wait_for_figures(server: ServerProcess, event: dict[str, Any], timeout: float = 15) -> str:
    """When the room's figures were last published, once they are (after any before)."""
    deadline = time.monotonic() + timeout
    seen: str | None = None
    while time.monotonic() < deadline:
        room = httpx.get(f"{server.url}/events/{event['id']}/waiting-room").json()
        if room["figures"] is not None:
            if seen is not None and room["figures"]["measuredAt"] != seen:
                return str(room["figures"]["measuredAt"])
            seen = room["figures"]["measuredAt"]
        time.sleep(0.3)
    raise AssertionError("no admission loop published the room's figures")


def wait_for_admissions(
    server: ServerProcess, tickets: dict[str, str], timeout: float = 40
) -> dict[str, str]:
    """Every customer's admission token, once all are admitted (polling as told)."""
    deadline = time.monotonic() + timeout
    admitted: dict[str, str] = {}
    while time.monotonic() < deadline:
        for customer, ticket in tickets.items():
            if customer in admitted:
                continue
            answer = httpx.get(f"{server.url}/queue/{ticket}")
            if answer.status_code == 200 and answer.json()["status"] == "admitted":
                admitted[customer] = answer.json()["admissionToken"]
        if len(admitted) == len(tickets):
            return admitted
        time.sleep(1.0)
    raise AssertionError(f"only {sorted(admitted)} admitted after {timeout} s")


def buy(server: ServerProcess, event: dict[str, Any], customer: str, token: str) -> None:
    booked = httpx.post(
        f"{server.url}/book",
        json={
            "eventId": event["id"],
            "sectionId": event["sections"][0]["id"],
            "qty": 1,
            "customerId": customer,
        },
        headers={"Admission-Token": token},
    )
    assert booked.status_code == 201, booked.text
