"""What one poll (GET /queue/{ticket}) costs in-process, with and without its fast path.

The same app twice, in one process, side by side: one as served, one with
`PollFastPath` taken out (every poll through the key check, the limits and
FastAPI, as before it). Each round polls `--tickets` tickets once on each
app, alternating, and times them with the process's CPU clock; the median
round and the ratio are printed.

    .venv/bin/python -m bench.poll_cost [--tickets 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from boxoffice.api.app import create_app
from boxoffice.api.routes.waiting_room import PollFastPath
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.db.migrate import upgrade
from boxoffice.services.clock import FakeClock


async def _call(app: FastAPI, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")] if body else [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 4521),
        "scheme": "http",
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def measure(url: str, tickets: int, rounds: int) -> dict[str, float]:
    settings = Settings(
        _env_file=None,
        database_url=url,
        boxoffice_open_access=True,
        rate_limits_enabled=False,
        metrics_sample_seconds=0,
        hold_sweep_interval_seconds=0,
        waiting_room_tick_ms=10_000,
    )
    clock = FakeClock()
    database = Database.from_url(settings.async_url)
    fast = create_app(settings, database, clock=clock)
    slow = create_app(settings, database, clock=clock)
    slow.user_middleware = [m for m in slow.user_middleware if m.cls is not PollFastPath]
    per_poll: dict[str, list[float]] = {"fast path": [], "through the stack": []}
    async with fast.router.lifespan_context(fast), slow.router.lifespan_context(slow):
        status, made = await _call(
            fast,
            "POST",
            "/events",
            json.dumps(
                {"name": "Polls", "sections": [{"name": "GA", "price": 5, "capacity": 10}]}
            ).encode(),
        )
        assert status == 201, made
        event = json.loads(made)["id"]
        room = json.dumps(
            {"newUsersPerMinute": 1, "totalActiveUsers": 1, "sessionDurationSeconds": 600}
        ).encode()
        # One room, seen by both apps' views (each refreshes its own).
        await _call(fast, "PUT", f"/events/{event}/waiting-room", room)
        await _call(slow, "PUT", f"/events/{event}/waiting-room", room)
        line = []
        for n in range(tickets):
            body = json.dumps({"customerId": f"c{n}"}).encode()
            status, joined = await _call(fast, "POST", f"/events/{event}/queue", body)
            assert status == 201, joined
            line.append(json.loads(joined)["ticket"])
        for _ in range(rounds):
            for name, app in (("fast path", fast), ("through the stack", slow)):
                clock.advance(31)  # every ticket on time again
                started = time.process_time()
                for ticket in line:
                    status, answer = await _call(app, "GET", f"/queue/{ticket}")
                    assert status == 200, answer
                per_poll[name].append((time.process_time() - started) / tickets * 1e6)
    await database.dispose()
    return {name: statistics.median(values) for name, values in per_poll.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='poll-cost-')) / 'polls.db'}"
    upgrade(url)
    found = asyncio.run(measure(url, args.tickets, args.rounds))
    for name, micros in found.items():
        print(f"{name}: {micros:.0f} µs CPU a poll (median of {args.rounds} rounds)")
    print(f"ratio: {found['through the stack'] / found['fast path']:.2f}")


if __name__ == "__main__":
    main()
