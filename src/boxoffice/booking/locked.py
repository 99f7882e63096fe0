"""The locked way to apply a batch: one transaction that holds its rows' locks.

On SQLite the whole transaction runs on the writer, in one hop from the event
loop (`services/unit_of_work.write_in_one_hop`). On PostgreSQL it runs on the
caller's kept connection, or a pooled one, through `run_sync`.

On PostgreSQL a few races end a transaction with nothing written, and resolve
themselves on a second look, so the batch is decided again once before anyone
hears of them:

- a hold another transaction expired meanwhile (`write.LostUpdate`: two batches
  locking different sections of one expired hold);
- an idempotency key another process stored between our read and our insert
  (its one-statement path committed it): the second look replays its answer;
- a deadlock or a serialization failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog
from sqlalchemy.exc import IntegrityError

from boxoffice.booking.connections import KeptConnections
from boxoffice.booking.transaction import Applied, apply_commands
from boxoffice.booking.write import LostUpdate
from boxoffice.db.database import Database
from boxoffice.domain.commands import Command
from boxoffice.services.unit_of_work import UnitOfWork, write_in_one_hop

log = structlog.get_logger("boxoffice.booking")


class LockedWriter:
    """Applies batches in transactions of their own; raises only if nothing was committed."""

    def __init__(self, database: Database, connections: KeptConnections | None = None) -> None:
        self._database = database
        self._connections = connections

    async def apply(self, commands: Sequence[Command], now: datetime) -> Applied:
        try:
            return await self._apply(commands, now)
        except Exception as error:
            if not worth_a_second_look(error):
                raise
            log.info("batch_decided_again", size=len(commands), reason=type(error).__name__)
        return await self._apply(commands, now)

    async def _apply(self, commands: Sequence[Command], now: datetime) -> Applied:
        if self._database.dialect == "sqlite":
            # Looked up at call time: the failure tests replace it.
            return await write_in_one_hop(self._database, apply_commands, list(commands), now)
        conn = None if self._connections is None else await self._connections.get(autocommit=False)
        async with UnitOfWork(self._database, write=True, connection=conn) as uow:
            applied = await uow.conn.run_sync(apply_commands, commands, now)
            await uow.commit()
        return applied


_RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure


def worth_a_second_look(error: BaseException) -> bool:
    """The transaction lost a race that a fresh read of the rows resolves."""
    seen: BaseException | None = error
    for _ in range(8):  # the chain: ours, SQLAlchemy's, the driver's
        if seen is None:
            break
        if isinstance(seen, LostUpdate):
            return True
        sqlstate = str(getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None) or "")
        if sqlstate in _RETRYABLE_SQLSTATES:
            return True
        if isinstance(seen, IntegrityError) and "pk_idempotency_keys" in str(seen):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False
