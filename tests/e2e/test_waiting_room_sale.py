"""2,000 customers race through the waiting room to 500 seats, against real server
processes (two workers on PostgreSQL, the embedded one on SQLite): nothing oversold or
leaked, the line's order kept, sold out told within a second, no 5xx."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.waiting_room_sale import run_sale

from tests.support.server import ServerProcess, audit_verify, inventory_check

pytestmark = pytest.mark.e2e

SEATS = 500
CUSTOMERS = 2000
SESSION_SECONDS = 120
MAX_POLL_SECONDS = 3
SOLD_OUT_TOLD_WITHIN = 1.0  # seconds, as the issue asks
ROOM = {
    "newUsersPerMinute": 6000,  # the stock, not the rate, holds this sale back
    "totalActiveUsers": 6000,
    "sessionDurationSeconds": SESSION_SECONDS,
    "queueingMethod": "fifo",
}


def test_two_thousand_customers_through_the_room_to_five_hundred_seats(
    database_url: str, tmp_path: Path
) -> None:
    workers = 1 if database_url.startswith("sqlite") else 2
    env = {
        "WAITING_ROOM_TICK_MS": "200",
        "WAITING_ROOM_REFRESH_MS": "100",
        # Later places are told to poll up to 3 s apart, not 30: the same line, told its
        # turns and the sell-out sooner, so the sale is not mostly waiting.
        "WAITING_ROOM_MAX_POLL_SECONDS": str(MAX_POLL_SECONDS),
    }
    with ServerProcess(database_url, workers=workers, log_dir=tmp_path, env=env) as server:
        event, other = _event_with_a_room(server.url), _event_with_a_room(server.url)
        section = event["sections"][0]["id"]
        # The bot lines up for another event: admitted and never buying, it would hold the
        # sale's last seats until its session lapsed, two minutes of waiting for nothing.
        bots = asyncio.run(_bot(server.url, other["id"]))
        result = asyncio.run(
            run_sale(
                [server.url],
                event["id"],
                section,
                customers=CUSTOMERS,
                session_seconds=SESSION_SECONDS,
            )
        )
        seats = httpx.get(f"{server.url}/events/{event['id']}").json()["sections"][0]
        figures = httpx.get(f"{server.url}/events/{event['id']}/waiting-room").json()["figures"]

    assert not [status for status in result.statuses if status >= 500], result.statuses
    bought = sum(customer.bought for customer in result.customers)
    assert bought == seats["sold"] == SEATS  # every seat sold, none twice
    assert seats["remaining"] == 0
    assert seats["held"] == 0
    assert inventory_check(database_url).returncode == 0
    assert audit_verify(database_url).returncode == 0
    finals = {customer.final for customer in result.customers}
    assert finals <= {"bought", "sold_out", "no_seats"}, finals  # nobody's session lapsed
    assert sum(customer.final == "sold_out" for customer in result.customers) > 1000
    assert figures["soldOut"] is True

    # The line's order is kept exactly: nobody let in before someone ahead of them.
    assert result.inversion.places == 0, result.inversion
    # And it decided who bought: early places bought, late ones found it sold out.
    correlation, ideal = result.correlation, result.ideal_correlation
    assert correlation is not None
    assert ideal is not None
    assert correlation <= 0.9 * ideal < 0, (correlation, ideal)
    # Sold out reached every waiting ticket within a second of the last seat going.
    assert result.last_sale_at is not None
    late = [
        seen - result.last_sale_at
        for customer in result.customers
        for seen in customer.waiting_seen_at
        if seen > result.last_sale_at + SOLD_OUT_TOLD_WITHIN
    ]
    assert not late, f"told 'waiting' up to {max(late):.2f} s after the sell-out"
    assert bots == (1, 429)
    # Later places were told to poll less often (the 2,000th's turn is 20 s away at the
    # room's pace: every 2 s), never less often than the server's cap.
    assert 1 < max(customer.longest_told for customer in result.customers) <= MAX_POLL_SECONDS


def _event_with_a_room(url: str) -> dict[str, Any]:
    event: dict[str, Any] = httpx.post(
        f"{url}/events",
        json={
            "name": "Stadium",
            "sections": [{"name": "GA", "price": 80, "capacity": SEATS}],
            "maxPerCustomer": 4,
        },
    ).json()
    room = httpx.put(f"{url}/events/{event['id']}/waiting-room", json=ROOM)
    assert room.status_code == 200, room.text
    return event


async def _bot(url: str, event_id: str) -> tuple[int, int]:
    """A bot: 20 joins at once for one customer get one place; polling again at once, 429."""
    async with httpx.AsyncClient(base_url=url) as client:
        joins = await asyncio.gather(
            *(
                client.post(f"/events/{event_id}/queue", json={"customerId": "bot"})
                for _ in range(20)
            )
        )
        for join in joins:  # a failure says what the server answered
            assert join.status_code == 201, (join.status_code, join.text)
        tickets = {join.json()["ticket"] for join in joins}
        again = await client.get(f"/queue/{tickets.pop()}")
        return len(tickets) + 1, again.status_code
