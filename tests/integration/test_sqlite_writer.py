"""SQLite's writer process (`db/sqlite_writer.py`): real kills, real pickling, real rollback.

The group-commit tests (test_group_commit.py) already run on the writer
process, SQLite's default; these cover what only a process can do: die, be
replaced, and send back what it raised.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import types
from pathlib import Path

import pytest

from boxoffice.booking import BatchedBooker
from boxoffice.booking import locked as locked_module
from boxoffice.config import async_database_url
from boxoffice.db.database import Database
from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.db.sqlite_writer import ProcessWriter
from boxoffice.domain.commands import Book
from boxoffice.domain.model import Booking
from tests.integration.test_booking_path import inventory, new_event
from tests.support.writer_faults import (
    fail_with_an_unpicklable_error,
    frozen_objects,
    gate_path,
    nothing,
    reached_gate,
    reserve_then_return_the_unsendable,
    reserve_then_wait_for_gate,
    wait_for_gate,
)

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def writer_pid(database: Database) -> int:
    assert isinstance(database.writer, ProcessWriter)
    assert database.writer.pid is not None
    return database.writer.pid


def assert_write_lock_taken(database_url: str) -> None:
    """Another connection cannot start writing: a write transaction is open."""
    path = database_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()


@SQLITE_ONLY
async def test_the_writer_is_a_process_of_its_own_started_with_the_booker(
    booker: BatchedBooker, database: Database
) -> None:
    pid = writer_pid(database)  # started by booker.start(), before any request
    assert pid != os.getpid()
    event = await new_event(database, 5)
    booking = await booker.submit(Book(event.id, event.sections[0].id, 2))
    assert isinstance(booking, Booking)
    assert writer_pid(database) == pid
    assert await inventory(database, event.sections[0].id) == (5, 3, 2)


@SQLITE_ONLY
async def test_a_writer_killed_mid_batch_leaks_nothing_and_is_replaced(
    booker: BatchedBooker,
    database: Database,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seats taken and bookings inserted, then SIGKILL before COMMIT: the batch is a
    503, SQLite keeps none of it, and the next request gets a new writer process."""
    event = await new_event(database, 10)
    s = event.sections[0].id
    monkeypatch.setattr(locked_module, "apply_commands", reserve_then_wait_for_gate)
    first = writer_pid(database)
    pending = [asyncio.create_task(booker.submit(Book(event.id, s, q))) for q in (1, 2)]
    await reached_gate(database_url)  # the writer has written, and waits before COMMIT
    assert_write_lock_taken(database_url)
    os.kill(first, signal.SIGKILL)
    results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 30)
    assert all(isinstance(r, DatabaseUnavailable) for r in results), results
    assert await inventory(database, s) == (10, 10, 0), "a killed batch left seats taken"

    gate_path(database_url).touch()
    assert (await booker.submit(Book(event.id, s, 3))).qty == 3, "no new writer"
    assert writer_pid(database) != first
    assert await inventory(database, s) == (10, 7, 3)


@SQLITE_ONLY
async def test_the_writer_process_freezes_what_it_loaded_before_its_first_job(
    database: Database,
) -> None:
    """Like the server (api/app.py), the writer keeps its start-up objects out of the
    cyclic collector's full passes. It is a fresh process, so nothing else froze them."""
    await database.start_writer()
    assert await database.run_on_writer(frozen_objects) > 0


@SQLITE_ONLY
async def test_an_error_that_cannot_cross_the_pipe_still_answers(
    booker: BatchedBooker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = await new_event(database, 10)
    s = event.sections[0].id
    real_batch = locked_module.apply_commands
    monkeypatch.setattr(locked_module, "apply_commands", fail_with_an_unpicklable_error)
    with pytest.raises(RuntimeError, match="_Unpicklable: no pickle for me"):
        await asyncio.wait_for(booker.submit(Book(event.id, s, 1)), 10)
    monkeypatch.setattr(locked_module, "apply_commands", real_batch)
    assert (await booker.submit(Book(event.id, s, 1))).qty == 1
    assert await inventory(database, s) == (10, 9, 1)


async def test_a_writer_that_cannot_open_the_database_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder" / "boxoffice.db"
    database = Database.from_url(async_database_url(f"sqlite:///{missing}"))
    try:
        with pytest.raises(DatabaseUnavailable, match=r"could not start.*unable to open"):
            await database.start_writer()
    finally:
        await database.dispose()


@SQLITE_ONLY
async def test_dispose_stops_the_writer_process(database: Database) -> None:
    await database.start_writer()
    pid = writer_pid(database)
    await database.dispose()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@SQLITE_ONLY
async def test_a_job_the_writer_cannot_load_is_answered_and_the_writer_stays(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Say the code on disk changed under a running server and a new writer lacks a
    function: that job fails with the reason, and the writer goes on serving."""
    phantom = types.ModuleType("boxoffice_phantom_module")

    def job(engine: object, abandoned: object) -> None:
        """Exists in this process only."""

    job.__module__ = phantom.__name__
    job.__qualname__ = "job"
    phantom.job = job  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, phantom.__name__, phantom)
    await database.start_writer()
    pid = writer_pid(database)
    with pytest.raises(ModuleNotFoundError, match="boxoffice_phantom_module"):
        await database.run_on_writer(job)
    await database.run_on_writer(nothing)
    assert writer_pid(database) == pid


@SQLITE_ONLY
async def test_a_result_that_cannot_be_sent_back_is_rolled_back(
    booker: BatchedBooker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed and then reported as failed, a batch would be retried and booked twice:
    the writer pickles the result before COMMIT, and rolls back if it cannot."""
    event = await new_event(database, 10)
    s = event.sections[0].id
    monkeypatch.setattr(locked_module, "apply_commands", reserve_then_return_the_unsendable)
    with pytest.raises(TypeError, match="pickle"):
        await asyncio.wait_for(booker.submit(Book(event.id, s, 2)), 10)
    assert await inventory(database, s) == (10, 10, 0), "committed, yet answered as failed"


@pytest.mark.parametrize("sqlite_writer", ["process", "thread"])
@SQLITE_ONLY
async def test_a_caller_cancelled_twice_still_holds_the_lock_until_the_job_ends(
    database: Database, database_url: str
) -> None:
    """However often the caller is cancelled, the write lock stays held while its job
    runs, and the next job gets its own answer, not the abandoned one's."""
    await database.start_writer()  # started first: a slow start is not the job running
    running = asyncio.create_task(database.run_on_writer(wait_for_gate))
    await reached_gate(database_url)  # the job is running on the writer
    for _ in range(2):
        running.cancel()
        await asyncio.sleep(0.05)
    assert not running.done(), "the caller left while its job still ran"
    assert database.write_lock is not None
    assert database.write_lock.locked()
    gate_path(database_url).touch()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 10)
    assert not database.write_lock.locked()
    assert await database.run_on_writer(wait_for_gate) == "done"


@SQLITE_ONLY
async def test_a_writer_whose_server_was_killed_leaves(database_url: str, tmp_path: Path) -> None:
    """SIGKILL leaves no one to close the pipe politely; the writer must see EOF and go."""
    script = tmp_path / "server.py"
    script.write_text(
        "import asyncio, sys\n"
        "from boxoffice.config import async_database_url\n"
        "from boxoffice.db.database import Database\n"
        "async def main():\n"
        "    database = Database.from_url(async_database_url(sys.argv[1]))\n"
        "    await database.start_writer()\n"
        "    print(database.writer.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        database_url,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)},
    )
    assert server.stdout is not None
    writer = int(await asyncio.wait_for(server.stdout.readline(), 30))
    os.kill(writer, 0)  # alive
    server.kill()
    await server.wait()
    for _ in range(200):
        try:
            os.kill(writer, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the writer outlived its killed server")
