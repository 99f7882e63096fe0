"""Requests driven through the app in-process, for counting instructions with callgrind.

Throughput on shared cores is noisy; an instruction count is not. This runs
`POST /book` (64 concurrent, one hot section, SQLite with group commit on a
writer thread so the whole booking is in this process) or `POST /noop` through
every middleware, after a warm-up, and prints nothing but errors. Count two
sizes and difference them, so that start-up cancels out:

    for n in 640 1920; do
      valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \\
        .venv/bin/python -m bench.inprocess book --keyed --requests $n
    done
    # (Ir at 1920 - Ir at 640) / 1280 = instructions per request

`--keyed` sends a customer's API key with rate limits on (a quota no run
exhausts); without it, open access and no rate limits, as the other scenarios.
The body is marked as arrived whole, as `boxoffice serve`'s protocol marks it.
"""

from __future__ import annotations

import argparse
import asyncio
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
    what: str, keyed: bool, requests: int, url: str, queue_timeout_ms: int = 1000
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
        body = json.dumps(await _booking(app, admin)).encode()
        headers = [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if keyed:
            headers.append((b"authorization", f"Bearer {customer}".encode()))
        path = "/noop" if what == "noop" else "/book"

        async def once() -> None:
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
                "headers": list(headers),
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

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(scope, receive, send)
            if statuses != [201]:
                raise SystemExit(f"{path} answered {statuses}")

        async def client(count: int) -> None:
            for _ in range(count):
                await once()

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
    parser.add_argument("what", choices=["book", "noop"])
    parser.add_argument("--keyed", action="store_true")
    parser.add_argument("--requests", type=int, default=1920)
    parser.add_argument(
        "--queue-timeout-ms", type=int, default=1000, help="BOOKING_QUEUE_TIMEOUT_MS (0: off)"
    )
    args = parser.parse_args()
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='boxoffice-count-')) / 'count.db'}"
    upgrade(url)  # runs its own event loop: before ours
    asyncio.run(drive(args.what, args.keyed, args.requests, url, args.queue_timeout_ms))


if __name__ == "__main__":
    main()
