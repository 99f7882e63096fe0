"""The unit of work: one transaction, owned by the use case that opens it.

    async with UnitOfWork(database, write=True) as uow:
        await uow.conn.execute(...)
        await uow.commit()

Leaving the block without `commit()` rolls back, whatever happened inside.

`single_statement=True` opens no explicit transaction: the one statement sent
is its own atomic transaction (autocommit), which saves the BEGIN and COMMIT
(or ROLLBACK) round trips. On PostgreSQL only, and not behind a transaction
pooler (`DB_POOLER=transaction`): there it is an ordinary transaction, whose
BEGIN brings the session's settings. The one-statement booking path
(`booking/remembered.py`), a burst of joins (`services/waiting_room.join`) and
the one-query reads on a request's path (hold caps, the event of a hold, an
API key) use it: under a sale's load each round trip waits its turn in a busy
event loop. `commit()` then only marks the work as done.

`snapshot=True` reads every statement from one snapshot: REPEATABLE READ on
PostgreSQL (a read transaction on SQLite always is one).

`connection=` runs the unit of work on a connection the caller keeps (the
group-commit committer keeps one, saving a pool checkout and a reset per
batch); it is left open, and the caller drops it after a failure.
Failures that mean the database is unavailable (unreachable, timed out,
locked for longer than the busy timeout) leave as `DatabaseUnavailable`, so
the HTTP edge answers 503 instead of 500.

`write_in_one_hop` is the same promise for blocking work on SQLite's writer
thread (see `db/database.py`): the group-commit committer runs a whole batch
there, BEGIN IMMEDIATE to COMMIT, in one hop from the event loop.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.db.database import BEGIN_MODE_OPTION, Database
from boxoffice.db.errors import DatabaseUnavailable, is_unavailable
from boxoffice.db.sqlite_writer import CommitGate

T = TypeVar("T")


class UnitOfWork:
    """A transaction on `database`; `write=True` takes SQLite's write lock up front."""

    def __init__(
        self,
        database: Database,
        *,
        write: bool,
        single_statement: bool = False,
        snapshot: bool = False,
        connection: AsyncConnection | None = None,
    ) -> None:
        self._database = database
        self._write = write
        self._snapshot = snapshot
        # Autocommit saves round trips on PostgreSQL only (SQLite is in-process, and its
        # pool's connections begin their own way), and not behind a transaction pooler,
        # where a statement's session settings ride on its BEGIN (db/database.py).
        self._single_statement = (
            single_statement and database.dialect == "postgresql" and database.pooler == "none"
        )
        self._borrowed = connection
        self._conn: AsyncConnection | None = None
        self._committed = False
        self._holds_lock = False

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open")
        return self._conn

    async def __aenter__(self) -> Self:
        lock = self._database.write_lock
        if self._write and lock is not None:
            await lock.acquire()
            self._holds_lock = True
        try:
            if self._borrowed is not None:
                self._conn = self._borrowed
            else:
                self._conn = await self._database.connect(write=self._write)
                if self._single_statement:
                    await self._conn.execution_options(isolation_level="AUTOCOMMIT")
                elif self._snapshot and self._database.dialect == "postgresql":
                    await self._conn.execution_options(isolation_level="REPEATABLE READ")
            if not self._single_statement:
                await self._conn.begin()
        except BaseException as error:
            await self._close()
            if isinstance(error, Exception) and is_unavailable(error):
                raise DatabaseUnavailable(str(error)) from error
            raise
        return self

    async def commit(self) -> None:
        if not self._single_statement:
            await self.conn.commit()
        self._committed = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._conn is not None and not self._committed and not self._single_statement:
                await self._conn.rollback()
        except Exception:  # the connection is gone or unusable: never reuse it
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.invalidate()
        finally:
            await self._close()
        if isinstance(exc, Exception) and is_unavailable(exc):
            raise DatabaseUnavailable(str(exc)) from exc

    async def _close(self) -> None:
        try:
            if self._conn is not None and self._borrowed is None:
                await self._conn.close()
        finally:
            self._conn = None
            if self._holds_lock and self._database.write_lock is not None:
                self._database.write_lock.release()
                self._holds_lock = False


class _Abandoned(Exception):
    """Rolls back a writer transaction whose caller was cancelled."""


def _one_write_transaction(
    work: Callable[..., T], args: tuple[Any, ...], engine: Engine, gate: CommitGate
) -> T:
    """The transaction `write_in_one_hop` promises, as the writer runs it."""
    with engine.connect() as conn:
        conn.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})
        with conn.begin():
            result = work(conn, *args)
            if not gate.allows(result):
                raise _Abandoned("the caller went away before the commit")
            return result


async def write_in_one_hop(database: Database, work: Callable[..., T], *args: Any) -> T:
    """SQLite: run `work(conn, *args)` as one write transaction on the writer.

    Commits if `work` returns and rolls back if it raises, like `UnitOfWork`;
    an unavailable database (locked past the busy timeout, say) leaves as
    `DatabaseUnavailable`. If the caller is cancelled while `work` runs (the
    server stopping, say), the transaction is rolled back unless its COMMIT has
    already begun: the caller answers "nothing was written", and that must hold.

    The writer may be another process (`db/sqlite_writer.py`): `work` must then
    be a module-level function, and `args` and its result must pickle.
    """
    try:
        return await database.run_on_writer(functools.partial(_one_write_transaction, work, args))
    except Exception as error:
        if is_unavailable(error):
            raise DatabaseUnavailable(str(error)) from error
        raise
