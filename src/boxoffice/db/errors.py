"""Infrastructure failures, told apart from the domain's own errors."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import exc as sa_exc


def describe(error: BaseException) -> str:
    """One line about a failure, without the URL (and so without its password)."""
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) and error.orig is not None else error
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"


class DatabaseUnavailable(Exception):
    """The database could not serve the request now. Retry later.

    Nothing was half-written. Whether anything was written is certain except when the
    connection was lost during COMMIT itself: then the work may have been applied, and
    only a retry with the same Idempotency-Key is safe (docs/architecture.md).
    """


class Overloaded(DatabaseUnavailable):
    """The booking queue did not reach this command in time (BOOKING_QUEUE_TIMEOUT_MS);
    it was never started, so nothing of it was written. Retry later."""


# Deadlock, serialization failure, lock or statement timeout, shutdown: the
# transaction was rolled back and a later retry can succeed. (Class 08 is
# "connection exception".)
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"}


# SQLITE_BUSY and _LOCKED (another writer past the busy timeout), _IOERR, _FULL,
# _CANTOPEN, _PROTOCOL, _READONLY: the file or its locks, not the statement.
_SQLITE_UNAVAILABLE = {"BUSY", "LOCKED", "IOERR", "FULL", "CANTOPEN", "PROTOCOL", "READONLY"}


def _transient(driver_error: object) -> bool:
    """The driver's error carries a SQLSTATE that a later retry can get past."""
    sqlstate = str(
        getattr(driver_error, "sqlstate", None) or getattr(driver_error, "pgcode", None) or ""
    )
    return sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] == "08"


def _connection_in_a_bad_state(error: BaseException) -> bool:
    """asyncpg's own client-side errors: every host read-only with
    `target_session_attrs=read-write` (a failover under way: the new primary is
    read-only until it is confirmed), or a connection whose protocol is still in an
    operation that never finished ("cannot switch to state …; another operation is in
    progress": a statement cut off when its server died, its cancel request lost).
    Either way this connection, or this moment, is unusable, and a retry on a new
    connection can succeed (the committer drops its connection on any failure)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, asyncpg.InternalClientError):
            return True
        cause = cause.__cause__
    return False


def is_unavailable(error: BaseException) -> bool:
    """True when `error` means the database is unreachable, overloaded or locked.

    Integrity and programming errors are not in this set: they are bugs or
    bad data, and must not be disguised as a temporary outage.
    """
    if _connection_in_a_bad_state(error):
        return True
    if isinstance(error, sa_exc.TimeoutError | TimeoutError | asyncio.TimeoutError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        sqlite_error = getattr(error.orig, "sqlite_errorname", None)
        if sqlite_error is not None:
            # pysqlite raises OperationalError for "no such table" and bad SQL too:
            # only these primary result codes mean the database itself is in the way.
            return str(sqlite_error).split("_")[1] in _SQLITE_UNAVAILABLE
        if _transient(error.orig):
            return True
        return isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
    # Raised unwrapped by the statements run on asyncpg itself (`db/driver.py`),
    # classified as SQLAlchemy classifies them when it wraps them.
    if isinstance(error, asyncpg.PostgresError):
        return _transient(error)
    if isinstance(error, asyncpg.InterfaceError):
        return True
    return isinstance(error, ConnectionError | OSError)
