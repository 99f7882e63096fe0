"""SQLite's writer processes in a real server: one per server process, gone after SIGTERM."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_concurrency import create_event, final_state
from tests.support.server import ServerProcess, process_group

pytestmark = pytest.mark.e2e


def writer_processes(pgid: int) -> list[int]:
    return [
        pid
        for pid in process_group(pgid)
        if b"boxoffice.db.sqlite_writer" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("workers", [1, 2])
async def test_one_writer_per_server_process_and_sigterm_stops_them_all(
    database_url: str, tmp_path: Path, workers: int
) -> None:
    server = ServerProcess(database_url, workers=workers, log_dir=tmp_path).start()
    try:
        assert server.process is not None
        pgid = server.process.pid
        event_id, section_id = await create_event(server.url, capacity=10)
        async with httpx.AsyncClient(base_url=server.url) as client:
            for _ in range(3):
                booked = await client.post(
                    "/book", json={"eventId": event_id, "sectionId": section_id, "qty": 1}
                )
                assert booked.status_code == 201, booked.text
        # ServerProcess gives a second worker 0.5 s after the first is ready; on a busy
        # machine it takes seconds more. Each worker starts its writer before it serves.
        deadline = time.monotonic() + 30
        while len(writer_processes(pgid)) < workers and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(writer_processes(pgid)) == workers
        # A service manager's SIGTERM reaches the whole process group, writers included:
        # they outlive it until their server has finished, then leave with it.
        server.stop()
        assert "Traceback" not in server.log(), server.log()
        # With two workers uvicorn may force-exit a worker (a second SIGTERM): its writer
        # then sees the pipe close and leaves right after.
        deadline = time.monotonic() + 10
        while process_group(pgid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert process_group(pgid) == [], "a process of the server outlived it"
    finally:
        server.kill()
    with ServerProcess(database_url, log_dir=tmp_path) as restarted:
        remaining, stored = await final_state(restarted.url, event_id)
    assert (remaining, sorted(stored.values())) == (7, [1, 1, 1])
