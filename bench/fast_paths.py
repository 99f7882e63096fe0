"""What a sale's hot requests cost in-process, with and without their fast paths:
a join of a waiting room's line, a poll of it, a booking, a hold and its confirm.

The same app twice, in one process, side by side: one as served, one with
`FastRoutes` and `PollFastPath` taken out (every request through FastAPI's
routing and validation, as before them). Keys are on, as in a sale: each join
and purchase carries its customer's key through the key check and the rate
limits (a quota no run exhausts); polls carry none. Each round, on each app in
turn, `--customers` customers join the line (64 at a time, the line joiner
batching them) and then every ticket is polled once; then as many customers
each book a seat, then hold one and confirm the hold, in an event without a
room (64 at a time, so the group commit batches them as in a sale). Each kind
of request is timed with the process's CPU clock (SQLite's writer thread
included: a purchase's whole cost), and the median round and the ratios are
printed. The joins are new places in each round (a join of a customer already
in line is a cheaper read of the same row).

    .venv/bin/python -m bench.fast_paths [--customers 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from boxoffice.api.app import create_app
from boxoffice.api.fast_routes import FastRoutes
from boxoffice.api.routes.waiting_room import PollFastPath
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.db.migrate import upgrade
from boxoffice.services.clock import FakeClock
from boxoffice.services.keys import create_customer_keys, create_key

CONCURRENCY = 64


async def _call(
    app: FastAPI, method: str, path: str, body: bytes = b"", key: str | None = None
) -> tuple[int, bytes]:
    headers = [(b"content-type", b"application/json")] if body else []
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 4521),
        "scheme": "http",
        "state": {},
        "boxoffice.body_complete": True,  # as `boxoffice serve`'s protocol marks it
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def measure(url: str, customers: int, rounds: int) -> dict[str, dict[str, float]]:
    settings = Settings(
        _env_file=None,
        database_url=url,
        sqlite_writer="thread",
        log_level="WARNING",
        boxoffice_open_access=False,
        rate_limits_enabled=True,
        rate_limit_write="100000000/1s",
        rate_limit_purchase="100000000/1s",
        metrics_sample_seconds=0,
        hold_sweep_interval_seconds=0,
        waiting_room_refresh_ms=0,  # the loops' work is not a request's: refreshed by hand
        waiting_room_tick_ms=0,
    )
    clock = FakeClock()
    database = Database.from_settings(settings)
    admin = (await create_key(database, role="admin", now=datetime.now(UTC))).token
    names = [f"c{n}" for n in range(2 * rounds * customers)]
    keys = iter(await create_customer_keys(database, names, datetime.now(UTC)))
    fast = create_app(settings, database, clock=clock)
    slow = create_app(settings, database, clock=clock)
    taken_out = (FastRoutes, PollFastPath)
    slow.user_middleware = [m for m in slow.user_middleware if m.cls not in taken_out]
    cost: dict[str, dict[str, list[float]]] = {
        what: {"fast path": [], "through the stack": []}
        for what in ("join", "poll", "book", "hold", "confirm")
    }
    async with fast.router.lifespan_context(fast), slow.router.lifespan_context(slow):
        status, made = await _call(
            fast,
            "POST",
            "/events",
            json.dumps(
                {"name": "Sale", "sections": [{"name": "GA", "price": 5, "capacity": 10}]}
            ).encode(),
            admin,
        )
        assert status == 201, made
        event = json.loads(made)["id"]
        status, made = await _call(
            fast,
            "POST",
            "/events",
            json.dumps(
                {"name": "Shop", "sections": [{"name": "GA", "price": 5, "capacity": 10**6}]}
            ).encode(),
            admin,
        )
        assert status == 201, made
        shop = json.loads(made)
        seat = {"eventId": shop["id"], "sectionId": shop["sections"][0]["id"], "qty": 1}
        book_body = json.dumps(seat).encode()
        hold_body = json.dumps(
            {"eventId": shop["id"], "items": [{"sectionId": seat["sectionId"], "qty": 1}]}
        ).encode()
        room = json.dumps(
            {"newUsersPerMinute": 1, "totalActiveUsers": 1, "sessionDurationSeconds": 600}
        ).encode()
        status, answer = await _call(fast, "PUT", f"/events/{event}/waiting-room", room, admin)
        assert status == 200, answer
        for app in (fast, slow):  # one room, seen by both apps' views
            await app.state.room_watch.refresh()
        for _ in range(rounds):
            for name, app in (("fast path", fast), ("through the stack", slow)):
                batch = [next(keys) for _ in range(customers)]
                line: list[str] = []

                async def join(mine: list[str], app: FastAPI = app, line: list[str] = line) -> None:
                    for key in mine:
                        status, joined = await _call(app, "POST", f"/events/{event}/queue", key=key)
                        assert status == 201, joined
                        line.append(json.loads(joined)["ticket"])

                started = time.process_time()
                await asyncio.gather(*(join(batch[n::CONCURRENCY]) for n in range(CONCURRENCY)))
                cost["join"][name].append((time.process_time() - started) / customers * 1e6)
                clock.advance(31)  # every ticket on time
                started = time.process_time()
                for ticket in line:
                    status, answer = await _call(app, "GET", f"/queue/{ticket}")
                    assert status == 200, answer
                cost["poll"][name].append((time.process_time() - started) / customers * 1e6)
                await _purchases(app, batch, book_body, hold_body, cost, name)
    await database.dispose()
    return {
        what: {name: statistics.median(values) for name, values in paths.items()}
        for what, paths in cost.items()
    }


async def _purchases(
    app: FastAPI,
    keys: list[str],
    book_body: bytes,
    hold_body: bytes,
    cost: dict[str, dict[str, list[float]]],
    name: str,
) -> None:
    """Each customer of `keys` books a seat; then each holds one, then confirms it."""

    async def each(what: str, call: Any) -> None:
        async def some(mine: list[str]) -> None:
            for key in mine:
                await call(key)

        started = time.process_time()
        await asyncio.gather(*(some(keys[n::CONCURRENCY]) for n in range(CONCURRENCY)))
        cost[what][name].append((time.process_time() - started) / len(keys) * 1e6)

    async def book(key: str) -> None:
        status, answer = await _call(app, "POST", "/book", book_body, key)
        assert status == 201, answer

    holds: dict[str, str] = {}

    async def hold(key: str) -> None:
        status, answer = await _call(app, "POST", "/holds", hold_body, key)
        assert status == 201, answer
        holds[key] = json.loads(answer)["id"]

    async def confirm(key: str) -> None:
        status, answer = await _call(app, "POST", f"/holds/{holds[key]}/confirm", b"{}", key)
        assert status == 201, answer

    await each("book", book)
    await each("hold", hold)
    await each("confirm", confirm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='fast-paths-')) / 'line.db'}"
    upgrade(url)
    found = asyncio.run(measure(url, args.customers, args.rounds))
    for what, paths in found.items():
        for name, micros in paths.items():
            print(f"{what}, {name}: {micros:.0f} µs CPU (median of {args.rounds} rounds)")
        print(f"{what}: {paths['through the stack'] / paths['fast path']:.2f} times cheaper")


if __name__ == "__main__":
    main()
