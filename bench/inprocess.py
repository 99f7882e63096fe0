"""Requests driven through the app in-process, for counting instructions with callgrind.

Throughput on shared cores is noisy; an instruction count is not. This runs
`POST /book` (64 concurrent, one hot section, SQLite with group commit on a
writer thread so the whole booking is in this process), checkouts (`POST
/holds` of 1 seat, then `POST /holds/{id}/confirm`: `--requests` counts
checkouts) or `POST /noop` through every middleware, after a warm-up, and
prints nothing but errors. Count two sizes and difference them, so that
start-up cancels out:

    for n in 640 1920; do
      valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \\
        .venv/bin/python -m bench.inprocess book --keyed --requests $n
    done
    # (Ir at 1920 - Ir at 640) / 1280 = instructions per request

`--keyed` sends a customer's API key with rate limits on (a quota no run
exhausts); without it, open access and no rate limits, as the other scenarios.
`--no-event-cache`: confirmations read their hold's event every time, as when
another process placed the hold (`booking/events_of.py`). `--database-url`
counts against PostgreSQL instead (an empty database; PostgreSQL's own work is
in its processes, so what is counted is the server's share, as the benchmark's
"server CPU" column).
The body is marked as arrived whole, as `boxoffice serve`'s protocol marks it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.noop_app import create_noop_app
from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.db.migrate import upgrade
from boxoffice.services.keys import create_key

CONCURRENCY = 64


async def drive(
    what: str,
    keyed: bool,
    requests: int,
    url: str,
    queue_timeout_ms: int = 1000,
    event_cache: bool = True,
) -> None:
    settings = Settings(
        _env_file=None,
        database_url=url,
        sqlite_writer="thread",
        log_level="WARNING",
        boxoffice_open_access=not keyed,
        rate_limits_enabled=keyed,
        rate_limit_purchase="100000000/1s",
        rate_limit_write="100000000/1s",
        booking_queue_timeout_ms=queue_timeout_ms,
        max_active_holds_per_customer=0,  # 64 checkouts at once, all one customer's
        max_hold_churn_per_hour=0,
    )
    database = Database.from_settings(settings)
    now = datetime.now(UTC)
    customer = (await create_key(database, role="customer", now=now, customer_id="c1")).token
    admin = (await create_key(database, role="admin", now=now)).token
    # The no-op app reads its settings from the environment: the same ones.
    os.environ.update(
        DATABASE_URL=url,
        SQLITE_WRITER="thread",
        LOG_LEVEL="WARNING",
        BOXOFFICE_OPEN_ACCESS=str(not keyed).lower(),
        RATE_LIMITS_ENABLED=str(keyed).lower(),
        RATE_LIMIT_PURCHASE="100000000/1s",
        RATE_LIMIT_WRITE="100000000/1s",
    )
    app = create_noop_app() if what == "noop" else create_app(settings, database)
    async with app.router.lifespan_context(app):
        booking = await _booking(app, admin)
        if not event_cache:  # the booker keeps none (older code has no such thing)
            with contextlib.suppress(AttributeError):
                app.state.booker.events_of.max_size = 0
        hold = {
            "eventId": booking["eventId"],
            "items": [{"sectionId": booking["sectionId"], "qty": 1}],
        }
        book_body = json.dumps(booking).encode()
        hold_body = json.dumps(hold).encode()
        headers_of = {}
        for body in (book_body, hold_body, b"{}"):
            headers_of[body] = [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            if keyed:
                headers_of[body].append((b"authorization", f"Bearer {customer}".encode()))

        async def once(path: str, body: bytes, status: int = 201) -> bytes:
            scope: dict[str, Any] = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": list(headers_of[body]),
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", 4521),
                "state": {},
                "boxoffice.body_complete": True,
            }
            delivered = False

            async def receive() -> MutableMapping[str, Any]:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.sleep(3600)
                raise AssertionError("unreachable")

            statuses: list[int] = []
            answer = bytearray()

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])
                elif message["type"] == "http.response.body":
                    answer.extend(message.get("body", b""))

            await app(scope, receive, send)
            if statuses != [status]:
                raise SystemExit(f"{path} answered {statuses}: {bytes(answer)!r}")
            return bytes(answer)

        async def checkout() -> None:
            placed = json.loads(await once("/holds", hold_body))
            await once(f"/holds/{placed['id']}/confirm", b"{}")

        async def client(count: int) -> None:
            for _ in range(count):
                if what == "checkout":
                    await checkout()
                else:
                    await once("/noop" if what == "noop" else "/book", book_body)

        await asyncio.gather(*(client(10) for _ in range(CONCURRENCY)))  # warm-up
        await asyncio.gather(*(client(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    await database.dispose()


async def _booking(app: Any, admin: str) -> dict[str, Any]:
    """A hot section to book in (made through the app, as an admin)."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        made = await http.post(
            "/events",
            json={"name": "Hot", "sections": [{"name": "A", "price": 1, "capacity": 1_000_000}]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        if made.status_code != 201:  # the no-op app has its own routes only
            return {"eventId": "0" * 32, "sectionId": "0" * 32, "qty": 1}
        event = made.json()
        return {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["book", "checkout", "noop"])
    parser.add_argument("--keyed", action="store_true")
    parser.add_argument("--requests", type=int, default=1920)
    parser.add_argument(
        "--queue-timeout-ms", type=int, default=1000, help="BOOKING_QUEUE_TIMEOUT_MS (0: off)"
    )
    parser.add_argument(
        "--no-event-cache",
        action="store_true",
        help="confirmations read their hold's event every time (booking/events_of.py)",
    )
    parser.add_argument(
        "--database-url",
        help="an empty database to count against (PostgreSQL: the server's own work is in "
        "other processes, so what is counted is this process's); default a new SQLite file",
    )
    args = parser.parse_args()
    url = args.database_url or (
        f"sqlite:///{Path(tempfile.mkdtemp(prefix='boxoffice-count-')) / 'count.db'}"
    )
    upgrade(url)  # runs its own event loop: before ours
    asyncio.run(
        drive(
            args.what,
            args.keyed,
            args.requests,
            url,
            args.queue_timeout_ms,
            event_cache=not args.no_event_cache,
        )
    )


if __name__ == "__main__":
    main()
