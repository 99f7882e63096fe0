"""SIGTERM to `boxoffice serve --workers 2`, with bookings in flight on SQLite and PostgreSQL.

The bookings are held in flight for real: the test itself holds the section's row lock
(PostgreSQL) or the database's write lock (SQLite), so every group commit waits on it.
Then SIGTERM goes to the server's main process, as systemd, Docker or Kubernetes send it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from boxoffice.config import async_database_url
from boxoffice.db.database import Database
from tests.support.server import ServerProcess, inventory_check

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def locked_section(database_url: str, section_id: str) -> AsyncIterator[None]:
    """Every write to the section waits while this block runs (another session's lock)."""
    if database_url.startswith("sqlite"):
        other = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    database = Database.from_url(async_database_url(database_url))
    try:
        async with database.engine.connect() as conn:
            await conn.begin()
            await conn.execute(
                text("SELECT 1 FROM sections WHERE id = :id FOR UPDATE"),
                {"id": uuid.UUID(section_id)},
            )
            try:
                yield
            finally:
                await conn.rollback()
    finally:
        await database.dispose()


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:  # a handshake nobody answers counts as not refused
        return False


async def test_sigterm_stops_accepting_finishes_in_flight_bookings_and_exits_0(
    database_url: str, tmp_path: Path
) -> None:
    env = {"DB_LOCK_TIMEOUT_SECONDS": "120", "SQLITE_BUSY_TIMEOUT_SECONDS": "120"}
    server = ServerProcess(database_url, workers=2, log_dir=tmp_path, env=env).start()
    assert server.process is not None
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as setup:
            made = await setup.post(
                "/events/create",
                json={
                    "name": "Last call",
                    "sections": [{"name": "GA", "price": 5, "capacity": 500}],
                },
            )
        assert made.status_code == 201, made.text
        event_id, section_id = made.json()["id"], made.json()["sections"][0]["id"]
        body = {"eventId": event_id, "sectionId": section_id, "qty": 2}
        limits = httpx.Limits(max_connections=40, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as c:
            async with locked_section(database_url, section_id):
                in_flight = [asyncio.create_task(c.post("/book", json=body)) for _ in range(24)]
                # Those queued behind the blocked batches are answered 503 overloaded after
                # BOOKING_QUEUE_TIMEOUT_MS; those inside a batch wait for the lock.
                await asyncio.sleep(2.5)
                waiting = [t for t in in_flight if not t.done()]
                assert waiting, "no booking was in flight when SIGTERM came"
                server.process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 15
                while not refuses_connections(server.port):
                    assert time.monotonic() < deadline, "still accepting connections"
                    await asyncio.sleep(0.1)
                assert server.process.poll() is None, "exited before its requests finished"
                assert not any(t.done() for t in waiting), "in-flight requests were dropped"
            answers = await asyncio.gather(*in_flight)
        exit_code = await asyncio.to_thread(server.process.wait, 60)
    finally:
        server.kill()
    assert exit_code == 0, server.log()[-2000:]
    for answer in answers:
        assert answer.status_code in (201, 503), answer.text
        if answer.status_code == 503:
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] in ("overloaded", "service_unavailable")
    assert all(t.result().status_code == 201 for t in waiting), "a batch in flight was failed"
    booked = {a.json()["id"] for a in answers if a.status_code == 201}
    with ServerProcess(database_url, log_dir=tmp_path) as restarted:
        async with httpx.AsyncClient(base_url=restarted.url, timeout=30) as c:
            section = (await c.get(f"/events/{event_id}")).json()["sections"][0]
            listed = (await c.get("/bookings", params={"eventId": event_id})).json()
    assert {b["id"] for b in listed} == booked, "acknowledged and stored bookings differ"
    assert section["sold"] == 2 * len(booked)
    check = inventory_check(database_url)
    assert check.returncode == 0, check.stdout


async def test_one_process_stopped_by_sigterm_exits_0(database_url: str, tmp_path: Path) -> None:
    """Without workers there is no supervisor: the server itself must count a graceful stop
    as a success (uvicorn raises the signal again, which ends it as killed by SIGTERM)."""
    server = ServerProcess(database_url, log_dir=tmp_path).start()
    assert server.process is not None
    try:
        server.process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(server.process.wait, 60)
    finally:
        server.kill()
    assert exit_code == 0, server.log()[-2000:]
