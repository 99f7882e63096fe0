"""The committer's own PostgreSQL connections, kept from one batch to the next.

Under load a batch every millisecond or so would otherwise pay a pool
checkout and a reset each. The kept connections skip both. The first batch
after a quiet second gives them back to the pool, as idle since their last
batch, and takes pinged ones (`db/database.py` pings a connection idle for a
second), so a database restart during a lull costs no request. (They
are given back then, not when the second passes: between sales the committer
holds them, two of the writers' pool, `db/database.py`.)
After any failure they are dropped (invalidated): the next batch opens fresh
ones.
"""

from __future__ import annotations

import contextlib
import time

from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.db.database import PING_AFTER_IDLE_SECONDS, Database, note_last_use
from boxoffice.db.errors import DatabaseUnavailable, is_unavailable

# At least the pool's: a connection given back after this lull is pinged before reuse.
KEEP_CONNECTION_IDLE_SECONDS = PING_AFTER_IDLE_SECONDS


class KeptConnections:
    """One connection in transaction mode and one in autocommit mode, opened on first use."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._in_transaction: AsyncConnection | None = None
        self._autocommit: AsyncConnection | None = None
        self._last_used = 0.0

    async def get(self, *, autocommit: bool) -> AsyncConnection:
        now = time.monotonic()
        if now - self._last_used > KEEP_CONNECTION_IDLE_SECONDS:
            await self.drop(invalidate=False)
        self._last_used = now
        for kept in (self._in_transaction, self._autocommit):
            if kept is not None and (kept.closed or kept.invalidated):
                await self.drop()
                break
        try:
            if autocommit:
                if self._autocommit is None:
                    self._autocommit = await self._open(autocommit=True)
                return self._autocommit
            if self._in_transaction is None:
                self._in_transaction = await self._open(autocommit=False)
            return self._in_transaction
        except Exception as error:
            if is_unavailable(error):
                raise DatabaseUnavailable(str(error)) from error
            raise

    async def _open(self, *, autocommit: bool) -> AsyncConnection:
        conn = await self._database.connect(write=True)
        if autocommit:
            try:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            except BaseException:
                await conn.close()
                raise
        return conn

    async def drop(self, *, invalidate: bool = True) -> None:
        """Close both; `invalidate` when they may be broken, so the pool never reuses them.
        Given back, each counts as idle since its last batch: the pool pings it before
        anyone uses it again."""
        for conn in (self._in_transaction, self._autocommit):
            if conn is not None:
                if invalidate:
                    with contextlib.suppress(Exception):
                        await conn.invalidate()
                elif not (conn.invalidated or conn.closed):
                    with contextlib.suppress(Exception):
                        await note_last_use(conn, self._last_used)
                with contextlib.suppress(Exception):
                    await conn.close()
        self._in_transaction = self._autocommit = None
