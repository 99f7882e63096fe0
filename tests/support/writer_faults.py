"""Faults to put in place of `reserve_batch`, as module-level functions.

SQLite's writer may be another process (`db/sqlite_writer.py`), which receives
the batch's function by name: a fault must be importable there, so it cannot
be a closure. Those that wait use a gate *file* next to the database, which
the test creates to let them go on; the writer process sees the same file.
A waiting fault first leaves a second file, which `reached_gate` waits for: so a
test acts once the writer really is at the gate, not after a guessed sleep.
Neither side waits for ever: past GATE_TIMEOUT_SECONDS it raises `GateTimeout`,
an AssertionError, which fails the test instead of letting it carry on.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from boxoffice.booking.transaction import apply_commands
from boxoffice.db.tables import bookings, sections
from boxoffice.domain.commands import Book, Command

GATE_TIMEOUT_SECONDS = 20.0


def gate_path(conn: Connection | str) -> Path:
    """The gate file of a SQLite database (given a connection to it, or its URL)."""
    database = conn if isinstance(conn, str) else str(conn.engine.url.database)
    return Path(database.removeprefix("sqlite:///") + ".gate")


class GateTimeout(AssertionError):
    """A gate was never opened, or never reached, in time: the test is broken."""


def _reached(gate: Path) -> Path:
    return gate.with_name(gate.name + ".reached")


def _given_up(gate: Path) -> Path:
    return gate.with_name(gate.name + ".given-up")


def _wait_at(gate: Path) -> None:
    """Say we are at `gate`, then block until it opens; fail past the timeout.

    Once one wait has given up, every later one fails at once: a failed batch is
    retried one command at a time, and each would wait the whole timeout again.
    """
    _reached(gate).touch()
    deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
    while not gate.exists():
        if _given_up(gate).exists() or time.monotonic() >= deadline:
            _given_up(gate).touch()
            raise GateTimeout(f"the test never opened {gate} (waited {GATE_TIMEOUT_SECONDS} s)")
        time.sleep(0.01)


async def reached_gate(database_url: str) -> None:
    """Return once a job of the writer waits at the gate of `database_url`'s database."""
    reached = _reached(gate_path(database_url))
    deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
    while not reached.exists():
        if time.monotonic() >= deadline:
            raise GateTimeout(f"no writer job reached the gate in {GATE_TIMEOUT_SECONDS} s")
        await asyncio.sleep(0.01)


def reserve_then_wait_for_gate(conn: Connection, requests: Sequence[Command], now: datetime) -> Any:
    """Do the batch's writes, then wait inside the transaction until the gate opens."""
    result = apply_commands(conn, requests, now)
    _wait_at(gate_path(conn))
    return result


def reserve_then_fail_batches(conn: Connection, requests: Sequence[Command], now: datetime) -> Any:
    """A batch writes, then dies; alone, only the 3-seat request is bad."""
    if len(requests) > 1:
        apply_commands(conn, requests, now)
        raise IntegrityError("INSERT", {}, Exception("constraint violated"))
    if requests[0].qty == 3:
        raise IntegrityError("INSERT", {}, Exception("this one is bad"))
    return apply_commands(conn, requests, now)


def reserve_then_lose_the_connection(
    conn: Connection, requests: Sequence[Command], now: datetime
) -> Any:
    apply_commands(conn, requests, now)
    raise OperationalError("COMMIT", {}, Exception("server closed the connection"))


class FailedBeforeCommit(Exception):
    """An exception between a batch's writes and its COMMIT: a rollback, not a kill.

    It carries what the transaction held when it was raised, so a test can tell
    that the writes it expects to be undone really were made.
    """

    def __init__(self, remaining: int, booked: int) -> None:
        super().__init__(remaining, booked)
        self.remaining = remaining
        self.booked = booked


def reserve_then_raise(conn: Connection, requests: Sequence[Command], now: datetime) -> Any:
    """Do the writes, then raise `FailedBeforeCommit`, with the section as they left it."""
    apply_commands(conn, requests, now)
    assert isinstance(requests[0], Book)
    section = uuid.UUID(requests[0].section_id)
    remaining = conn.execute(
        select(sections.c.remaining).where(sections.c.id == section)
    ).scalar_one()
    booked = conn.execute(
        select(func.coalesce(func.sum(bookings.c.qty), 0)).where(bookings.c.section_id == section)
    ).scalar_one()
    raise FailedBeforeCommit(int(remaining), int(booked))


def nothing(engine: Any, gate: Any) -> None:
    """A writer job that does nothing: once it returns, the jobs before it are done."""


def frozen_objects(engine: Any, gate: Any) -> int:
    """A writer job: how many objects the writer's process has frozen (`gc.freeze`)."""
    return gc.get_freeze_count()


class _Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("no pickle for me")
        self.lock = threading.Lock()


def fail_with_an_unpicklable_error(
    conn: Connection, requests: Sequence[Command], now: datetime
) -> Any:
    raise _Unpicklable()


class _Unsendable:
    """A result the writer cannot pickle back to the server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


def reserve_then_return_the_unsendable(
    conn: Connection, requests: Sequence[Command], now: datetime
) -> Any:
    apply_commands(conn, requests, now)
    return _Unsendable()


def wait_for_gate(engine: Any, gate: Any) -> str:
    """A writer job that blocks until the gate file of `engine`'s database appears."""
    _wait_at(gate_path(str(engine.url.database)))
    return "done"
