"""Faults to put in place of `reserve_batch`, as module-level functions.

SQLite's writer may be another process (`db/sqlite_writer.py`), which receives
the batch's function by name: a fault must be importable there, so it cannot
be a closure. Those that wait use a gate *file* next to the database, which
the test creates to let them go on; the writer process sees the same file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from boxoffice.booking.transaction import apply_commands
from boxoffice.domain.commands import Command

GATE_TIMEOUT_SECONDS = 20.0


def gate_path(conn: Connection | str) -> Path:
    """The gate file of a SQLite database (given a connection to it, or its URL)."""
    database = conn if isinstance(conn, str) else str(conn.engine.url.database)
    return Path(database.removeprefix("sqlite:///") + ".gate")


def reserve_then_wait_for_gate(conn: Connection, requests: Sequence[Command], now: datetime) -> Any:
    """Do the batch's writes, then wait inside the transaction until the gate opens."""
    result = apply_commands(conn, requests, now)
    deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
    while not gate_path(conn).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
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


class Crash(Exception):
    """Stands for the process dying between the batch's writes and its COMMIT."""


def reserve_then_crash(conn: Connection, requests: Sequence[Command], now: datetime) -> Any:
    apply_commands(conn, requests, now)
    raise Crash("process died before the commit")


def nothing(engine: Any, gate: Any) -> None:
    """A writer job that does nothing: once it returns, the jobs before it are done."""


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
    deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
    while not gate_path(str(engine.url.database)).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"
