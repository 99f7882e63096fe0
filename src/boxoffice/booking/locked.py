"""The locked way to apply a batch: one transaction that holds its rows' locks.

On SQLite the whole transaction runs on the writer, in one hop from the event
loop (`services/unit_of_work.write_in_one_hop`). On PostgreSQL it runs on the
caller's kept connection, or a pooled one, through `run_sync`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from boxoffice.booking.connections import KeptConnections
from boxoffice.booking.transaction import Applied, apply_commands
from boxoffice.db.database import Database
from boxoffice.domain.commands import Command
from boxoffice.services.unit_of_work import UnitOfWork, write_in_one_hop


class LockedWriter:
    """Applies batches in transactions of their own; raises only if nothing was committed."""

    def __init__(self, database: Database, connections: KeptConnections | None = None) -> None:
        self._database = database
        self._connections = connections

    async def apply(self, commands: Sequence[Command], now: datetime) -> Applied:
        if self._database.dialect == "sqlite":
            # Looked up at call time: the failure tests replace it.
            return await write_in_one_hop(self._database, apply_commands, list(commands), now)
        conn = None if self._connections is None else await self._connections.get(autocommit=False)
        async with UnitOfWork(self._database, write=True, connection=conn) as uow:
            applied = await uow.conn.run_sync(apply_commands, commands, now)
            await uow.commit()
        return applied
