"""Fraud flags kept and read back: `FlagDesk` takes what the HTTP edge sees, asks the
`Watch` (`domain/fraud.py`) whether it is suspicious, and stores the flags it raises.

Flags are written by a background task, a batch a second, never by the request
that raised them: a flag must not slow down or fail the purchase it describes.
Each is also logged (a warning) and counted (`boxoffice_fraud_flags_total`), so
an operator sees it even if it could not be stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import structlog
from sqlalchemy import insert, select

from boxoffice.db.database import Database
from boxoffice.db.tables import fraud_flags
from boxoffice.domain.access import Principal
from boxoffice.domain.fraud import Caller, Flag, FraudRules, Rule, Watch
from boxoffice.domain.ids import parse_id
from boxoffice.observability import metrics
from boxoffice.periodic import Periodic
from boxoffice.services.events import managed_event
from boxoffice.services.pages import Page, SeqCursor
from boxoffice.services.unit_of_work import UnitOfWork

log = structlog.get_logger("boxoffice.flags")

WRITE_INTERVAL_SECONDS = 1.0
MAX_PENDING = 10_000  # flags waiting to be written; past it, new ones are only logged


class FlagDesk:
    """The watch, and the queue of flags on their way to the database."""

    def __init__(self, database: Database, rules: FraudRules) -> None:
        self.database = database
        self.watch = Watch(rules)
        self.pending: list[Flag] = []
        self._writing = Periodic("boxoffice-fraud-flags", WRITE_INTERVAL_SECONDS, self.flush)

    def raise_flags(self, flags: list[Flag]) -> None:
        for flag in flags:
            metrics.FRAUD_FLAGS.inc((flag.rule,))
            log.warning(
                "fraud_flag",
                rule=flag.rule,
                event_id=flag.event_id,
                customer_id=flag.customer_id,
                key_id=flag.key_id,
                address=flag.address,
                **flag.evidence,
            )
            if len(self.pending) < MAX_PENDING:
                self.pending.append(flag)

    def purchase(self, at: datetime, who: Caller, event_id: str, qty: int, max_qty: int) -> None:
        self.raise_flags(self.watch.purchase(time.monotonic(), at, who, event_id, qty, max_qty))

    def refusal(self, at: datetime, who: Caller, code: str, event_id: str | None) -> None:
        self.raise_flags(self.watch.refusal(time.monotonic(), at, who, code, event_id))

    def hold_churn(self, at: datetime, who: Caller, event_id: str, churned: int) -> None:
        self.raise_flags(self.watch.hold_churn(time.monotonic(), at, who, event_id, churned))

    async def start(self) -> None:
        self._writing.start()

    async def stop(self) -> None:
        """Let a write under way finish (cancelled, it would lose the flags it took), then
        write what was raised since."""
        await self._writing.stop()
        await self.flush()

    async def flush(self) -> None:
        flags, self.pending = self.pending, []
        if not flags:
            return
        try:
            async with UnitOfWork(self.database, write=True) as uow:
                await uow.conn.execute(insert(fraud_flags), [_row(flag) for flag in flags])
                await uow.commit()
        except asyncio.CancelledError:
            # Cancelled mid-write (a stop that ran out of time): the last flush writes them,
            # at worst twice if the cancel came after the COMMIT. Flags are advice.
            self.pending[:0] = flags
            raise
        except Exception as error:  # the database is down: the flags were logged
            log.warning("fraud_flags_not_stored", count=len(flags), error=type(error).__name__)


def _row(flag: Flag) -> dict[str, object]:
    return {
        "at": flag.at,
        "rule": flag.rule,
        "event_id": None if flag.event_id is None else parse_id(flag.event_id),
        "customer_id": flag.customer_id,
        "key_id": flag.key_id,
        "address": flag.address,
        "evidence": json.dumps(flag.evidence, separators=(",", ":"), sort_keys=True),
    }


async def list_flags(
    database: Database,
    *,
    viewer: Principal,
    event_id: str | None,
    rule: Rule | None,
    customer_id: str | None,
    limit: int,
    cursor: SeqCursor | None,
) -> Page[Flag]:
    """One page of flags, oldest first: an event's (its organizer's or an admin's to see;
    another's event is not found), or all of them (admins)."""
    query = select(fraud_flags).order_by(fraud_flags.c.seq).limit(limit + 1)
    if cursor is not None:
        query = query.where(fraud_flags.c.seq > cursor.seq)
    if rule is not None:
        query = query.where(fraud_flags.c.rule == rule)
    if customer_id is not None:
        query = query.where(fraud_flags.c.customer_id == customer_id)
    async with UnitOfWork(database, write=False) as uow:
        if event_id is not None:
            ident = await managed_event(uow.conn, event_id, viewer)
            query = query.where(fraud_flags.c.event_id == ident)
        else:
            viewer.require("all_flags")
        rows = (await uow.conn.execute(query)).all()
    page = rows[:limit]
    next_cursor = SeqCursor(page[-1].seq).encode() if len(rows) > limit else None
    return Page([_flag(row) for row in page], next_cursor)


def _flag(row: object) -> Flag:
    event_id = row.event_id  # type: ignore[attr-defined]
    return Flag(
        rule=row.rule,  # type: ignore[attr-defined]
        at=row.at,  # type: ignore[attr-defined]
        event_id=None if event_id is None else str(event_id),
        customer_id=row.customer_id,  # type: ignore[attr-defined]
        key_id=row.key_id,  # type: ignore[attr-defined]
        address=row.address,  # type: ignore[attr-defined]
        evidence=json.loads(row.evidence),  # type: ignore[attr-defined]
        seq=row.seq,  # type: ignore[attr-defined]
    )
