"""One round trip per batch on PostgreSQL: decide on remembered sections, verify while writing.

The committer remembers each section as its last batch left it. A batch of
bookings and holds whose sections are all remembered is decided on copies of
them (`domain.decisions.decide`, the same rules as under lock) and written with
the one statement of `booking/write.py`, outside any explicit transaction, so
PostgreSQL runs it as its own atomic transaction. No row lock is held across a
network round trip.

The remembered counts may be stale: other processes sell the same sections.
So the statement adds the batch's changes to the true counts, under their row
locks, and writes nothing at all unless every section's true remaining covers
the most the batch drew from it at any step (`Effects.drawn`). Then every
command, in order, had its seats in the true count too: the decisions it commits
are the ones the locked path would have made (any refusal goes there anyway).
The statement returns the sections as it left them, and those are remembered:
another process's sales cost nothing but a fresher memory. The remembered
counts are hints for deciding; the statement's check and the CHECK
constraints are what make the write right.

It also remembers the holds its batches placed, and those another process
placed that it read for a confirmation (`events_of.py`), while they are
active, so that a checkout's confirmation (or a release) is decided and
written the same way: the statement checks that the hold is still active,
under its row lock. Deciding on a copy that counts fewer seats held than the
hold has (placed elsewhere after this process last wrote there) fails the
domain's sanity check, and such a batch is decided under lock; otherwise the
status check is what makes it right.

A capped customer's bookings and holds (an event's `maxPerCustomer`) are
decided as if the customer had no tickets yet: the statement adds the batch's
tickets to the customer's tally row (`customer_tickets`), making it if need
be, and that row's CHECK refuses the whole statement when the sum passes the
cap. So the cap is checked on the true count, under the row's lock, and a
customer who is over it is decided again under lock, where the refusal says how
many it may still take.

The batch goes the locked way instead (the caller's `LockedWriter`) when:

- a section or hold it names is not remembered (first use, placed by another
  process, or forgotten as stale), or the hold has expired (expiry gives seats
  back, which is decided under lock);
- it holds a cancellation, or a capped customer's release (tickets given back
  to a tally this process does not know);
- a capped customer it books or holds for already has tickets that, with
  these, pass the cap (the tally's CHECK, above);
- any command would be refused: a refusal must be decided on locked rows,
  where the seats of expired holds are given back first;
- the statement finds a section without the seats the batch draws from it
  (another process sold them, or expired holds still count there): those
  sections are forgotten, and the locked batch remembers them afresh;
- an idempotency key was used before: its unique index refuses the statement
  (nothing written), and the locked path replays the stored answer;
- PostgreSQL ends the statement as a deadlock's victim (nothing written);
- any other CHECK refuses it (nothing written): the hints it was decided on
  are forgotten, and the refusal logged (`one_statement_refused_by_check`,
  with the failing row). The one race known to lead there is closed in the
  statement (its UPDATE adds to the counts as locked, not to its snapshot's
  copy, which PostgreSQL checks first); this is the defence if another does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.booking.transaction import new_id
from boxoffice.booking.write import PG_WRITE, pg_parameters
from boxoffice.db.driver import DriverStatement
from boxoffice.domain.commands import Book, Command, ConfirmHold, PlaceHold, ReleaseHold
from boxoffice.domain.decisions import Decisions, Inventory, decide
from boxoffice.domain.errors import BoxofficeError
from boxoffice.domain.ids import cached_canonical_id
from boxoffice.domain.model import Hold, SeatsDisagree, Section
from boxoffice.observability import metrics

log = structlog.get_logger("boxoffice.booking")

# A capped customer's tally over its cap: the statement wrote nothing (`db/tables.py`).
_OVER_THE_CAP = "ck_customer_tickets_within_limit"

# Run on asyncpg directly: this statement is the hot path (see `db/driver.py`).
_WRITE_IF_UNCHANGED = DriverStatement(PG_WRITE)


# Why a batch went the locked way: the `reason` of `boxoffice_batch_paths` (its docs in
# docs/operations.md name each one).
LockedReason = Literal[
    "hold_not_remembered",
    "cancellation",
    "unknown_section",
    "section_not_remembered",
    "capped_release",
    "seats_disagree",
    "refusal",
    "idempotency_key_used",
    "customer_cap",
    "check",
    "deadlock",
    "stale",
    "hold_or_key_moved",
]


def _locked(reason: LockedReason) -> None:
    """Count an attempt at a batch sent the locked way, and why (`boxoffice_batch_paths`)."""
    metrics.BATCH_PATHS.inc(("locked", reason))


class Remembered:
    """Sections as this process's last committed batches left them, and its active holds.

    Both bounded, least recently used dropped first.
    """

    def __init__(self, max_size: int = 100_000) -> None:
        self._sections: OrderedDict[str, Section] = OrderedDict()
        self._holds: OrderedDict[str, Hold] = OrderedDict()
        self._max_size = max_size

    def __len__(self) -> int:
        return len(self._sections)

    def inventory_for(self, commands: Sequence[Command], now: datetime) -> Inventory | None:
        """Working copies of all that `commands` touch, or None if they need locks."""
        found: dict[str, Section] = {}
        holds: dict[str, Hold] = {}
        for command in commands:
            names: tuple[str, ...]
            gives_back = None  # the customer a release gives tickets back
            if isinstance(command, Book | PlaceHold):
                names = command.section_names
            elif isinstance(command, ConfirmHold | ReleaseHold):
                hold = self._active_hold(command.hold_id, now)
                if hold is None:
                    _locked("hold_not_remembered")
                    return None
                holds[hold.id] = hold
                names = tuple(item.section_id for item in hold.items)
                if isinstance(command, ReleaseHold):
                    gives_back = hold.customer_id
            else:
                _locked("cancellation")
                return None
            for name in names:
                ident = cached_canonical_id(name)
                if ident is None:
                    _locked("unknown_section")
                    return None
                if ident not in found:
                    section = self._sections.get(ident)
                    if section is None:
                        _locked("section_not_remembered")
                        return None
                    found[ident] = section.copy()
                if gives_back is not None and found[ident].max_per_customer is not None:
                    _locked("capped_release")
                    return None
        return Inventory(sections=found, holds=holds)

    def _active_hold(self, hold_id: str, now: datetime) -> Hold | None:
        ident = cached_canonical_id(hold_id)
        hold = None if ident is None else self._holds.get(ident)
        if hold is None or hold.status != "active" or now >= hold.expires_at:
            return None
        return hold

    def remember(self, sections: Mapping[str, Section]) -> None:
        """Keep `sections` as they are; the caller hands them over and changes them no more."""
        for key, section in sections.items():
            self._sections[key] = section
            self._sections.move_to_end(key)
        while len(self._sections) > self._max_size:
            self._sections.popitem(last=False)

    def forget(self, section_ids: Sequence[str]) -> None:
        for section_id in section_ids:
            self._sections.pop(section_id, None)

    def remember_holds(self, new: Iterable[Hold], changed: Iterable[Hold]) -> None:
        """Keep the holds just placed; settled ones are never decided from memory."""
        for hold in new:
            self._holds[hold.id] = hold
        for hold in changed:
            self._holds.pop(hold.id, None)
        while len(self._holds) > self._max_size:
            self._holds.popitem(last=False)

    def remember_read_hold(self, hold: Hold) -> None:
        """Keep a hold read from the database (placed by another process), if active."""
        if hold.status == "active":
            self.remember_holds([hold], [])

    def forget_holds(self, hold_ids: Iterable[str]) -> None:
        for hold_id in hold_ids:
            ident = cached_canonical_id(hold_id)
            if ident is not None:
                self._holds.pop(ident, None)


async def apply_if_unchanged(
    conn: AsyncConnection,
    commands: Sequence[Command],
    inventory: Inventory,
    remembered: Remembered,
    now: datetime,
) -> Decisions | None:
    """The decisions, committed; or None when nothing was written and the batch needs locks.

    `inventory` is `remembered.inventory_for(commands)`: copies, decided on here.
    """
    try:
        decisions = decide(commands, inventory, now, new_id)
    except SeatsDisagree:
        # A copy counts fewer seats held than a hold has (placed by another process after
        # our last write there, or settled before it): the stored rows decide.
        _locked("seats_disagree")
        return None
    if any(isinstance(outcome, BoxofficeError) for outcome in decisions.outcomes):
        _locked("refusal")
        return None
    try:
        rows = await _WRITE_IF_UNCHANGED.fetch(conn, pg_parameters(decisions.effects, now))
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == "pk_idempotency_keys":
            _locked("idempotency_key_used")
            return None  # a retry: the locked path finds the stored answer
        raise
    except asyncpg.CheckViolationError as error:
        if error.constraint_name == _OVER_THE_CAP:
            _locked("customer_cap")
            return None  # decided on no tickets, and the customer has some: see above
        # Any other CHECK (seats that would not add up, or go below zero): a hint led to
        # a write the rows refuse. Nothing was written; forget the hints and decide
        # under lock, rather than fail the batch and try its commands one by one.
        log.warning(
            "one_statement_refused_by_check",
            constraint=error.constraint_name,
            # The failing row: a section's holds ids, names and counts only (a row of
            # another table could hold a customer's id or payment reference).
            detail=error.detail if error.table_name == "sections" else None,
            sections={
                ident: (*decisions.effects.loaded[ident], decisions.effects.drawn[ident])
                for ident in decisions.effects.sections
            },
            holds=sorted(decisions.effects.changed_holds),
        )
        remembered.forget(list(decisions.effects.sections))
        remembered.forget_holds(decisions.effects.changed_holds)
        _locked("check")
        return None
    except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
        # Nothing written. It locks a capped customer's tally after the sections and
        # holds; a locked batch giving back that customer's expired hold elsewhere may
        # lock them the other way round. The locked path decides again (`locked.py`).
        _locked("deadlock")
        return None
    ok, stale, written = rows[0]
    if not ok:
        remembered.forget(stale or [])
        # No section short: a hold settled meanwhile, or a key another transaction holds.
        _locked("stale" if stale else "hold_or_key_moved")
        return None
    # Committed: nothing below may raise. Remember each section as it now stands, other
    # processes' seats included (the statement added ours to the true counts).
    sections = decisions.effects.sections
    # json_agg: decoded by the codec SQLAlchemy's dialect sets on its connections; NULL
    # when no section changed.
    for ident, remaining, held, sold, version in written or ():
        section = sections[ident]
        section.remaining, section.held, section.sold = remaining, held, sold
        section.version = version
    remembered.remember(sections)
    remembered.remember_holds(decisions.effects.new_holds, decisions.effects.changed_holds.values())
    metrics.BATCH_PATHS.inc(("memory", "unchanged"))
    return decisions
