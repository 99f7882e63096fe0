"""PostgreSQL stops under load and starts again: the server answers 503 with Retry-After
(never a 500, never a hang), `/readyz` says not ready, and bookings resume by themselves,
in the same server processes, with every acknowledged booking stored."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import ThrowawayPostgres
from tests.support.server import ServerProcess, inventory_check

pytestmark = pytest.mark.e2e

# A client waiting this long for one answer counts as a hang.
ANSWER_DEADLINE_SECONDS = 30.0


@pytest.fixture
def cluster() -> Iterator[ThrowawayPostgres]:
    """A cluster of its own: this test stops it, which the shared one must never see."""
    own = ThrowawayPostgres().start()
    try:
        yield own
    finally:
        own.stop()


def migrated(cluster: ThrowawayPostgres) -> str:
    url = cluster.create_database("outage")
    subprocess.run(
        [sys.executable, "-m", "boxoffice", "db", "upgrade"],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
        timeout=120,
    )
    return url


async def test_the_database_stops_and_starts_under_load(
    cluster: ThrowawayPostgres, tmp_path: Path
) -> None:
    url = migrated(cluster)
    env = {"DB_CONNECT_TIMEOUT_SECONDS": "2", "DB_POOL_TIMEOUT_SECONDS": "2"}
    server = ServerProcess(url, workers=2, log_dir=tmp_path, env=env).start()
    pid = server.process.pid if server.process else 0
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=ANSWER_DEADLINE_SECONDS) as c:
            made = await c.post(
                "/events/create",
                json={
                    "name": "Outage",
                    "sections": [{"name": "GA", "price": 5, "capacity": 10**6}],
                },
            )
            assert made.status_code == 201, made.text
            event_id, section_id = made.json()["id"], made.json()["sections"][0]["id"]
            phase = "up"
            seen: Counter[tuple[str, int, str]] = Counter()
            booked: set[str] = set()
            wrong: list[str] = []
            stop = asyncio.Event()

            async def load() -> None:
                body = {"eventId": event_id, "sectionId": section_id, "qty": 1}
                while not stop.is_set():
                    now = phase
                    try:
                        answer = await c.post("/book", json=body)
                    except httpx.HTTPError as error:  # a hang (timeout) or a dropped connection
                        wrong.append(f"{now}: {type(error).__name__}")
                        continue
                    if answer.status_code == 201:
                        booked.add(answer.json()["id"])
                        seen[(now, 201, "")] += 1
                        continue
                    code = answer.json().get("code", "") if answer.content else ""
                    seen[(now, answer.status_code, code)] += 1
                    if (
                        answer.status_code != 503
                        or answer.headers.get("content-type") != "application/problem+json"
                        or answer.headers.get("retry-after") != "1"
                    ):
                        wrong.append(f"{now}: {answer.status_code} {answer.text[:200]}")
                    await asyncio.sleep(0.05)  # as a client honouring Retry-After, sped up

            async def until(condition: str, check: object, within: float = 90.0) -> None:
                deadline = time.monotonic() + within
                while not check():  # type: ignore[operator]
                    assert not wrong, wrong[:5]
                    assert time.monotonic() < deadline, f"never saw {condition}: {dict(seen)}"
                    await asyncio.sleep(0.05)

            clients = [asyncio.create_task(load()) for _ in range(12)]
            try:
                await until("bookings before", lambda: seen[("up", 201, "")] >= 100)
                cluster.halt()
                phase = "down"
                await until(
                    "503s while down",
                    lambda: (
                        sum(n for (p, s, _), n in seen.items() if p == "down" and s == 503) >= 50
                    ),
                )
                ready = await c.get("/readyz")
                assert ready.status_code == 503
                assert ready.headers["content-type"] == "application/problem+json"
                assert ready.json()["code"] == "service_unavailable"
                cluster.resume()
                phase = "back"
                deadline = time.monotonic() + 90
                while (await c.get("/readyz")).status_code != 200:
                    assert time.monotonic() < deadline, "never ready again without a restart"
                    await asyncio.sleep(0.2)
                await until("bookings after", lambda: seen[("back", 201, "")] >= 100)
            finally:
                stop.set()
                await asyncio.gather(*clients)
        assert not wrong, wrong[:5]
        down_codes = {code for (p, status, code) in seen if p == "down" and status == 503}
        assert down_codes <= {"service_unavailable", "overloaded"}, down_codes
        assert server.process is not None
        assert server.process.poll() is None, "the server died"
        assert server.process.pid == pid
    finally:
        server.stop()
    stored = cluster.psql("SELECT id FROM bookings", database="outage").split()
    assert booked <= set(stored), "an acknowledged booking was lost in the outage"
    check = inventory_check(url)
    assert check.returncode == 0, check.stdout
