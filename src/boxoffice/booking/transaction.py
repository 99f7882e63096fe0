"""One transaction for a batch of commands: load under lock, decide, write.

    load_inventory ──> decide ──(refused for want of seats?)──> load_expired, decide again
                         │
                         └──> write_effects ──> the caller commits

The same function serves every path that holds locks: the group commit's
locked batches, the direct path (a batch of one) and the sweeper, on both
databases. It is synchronous and module-level on purpose: SQLite's
committer runs it whole on its writer process (`db/sqlite_writer.py`), in one
hop from the event loop, so its arguments and results must pickle; PostgreSQL's
runs it through `AsyncConnection.run_sync`, each statement awaited on asyncpg.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from boxoffice.booking.load import load_expired, load_inventory
from boxoffice.booking.write import write_effects
from boxoffice.domain.commands import Command
from boxoffice.domain.decisions import Changes, Decisions, Inventory, Outcome, decide
from boxoffice.domain.ids import IdPool
from boxoffice.domain.model import Hold, Section

new_id = IdPool()


@dataclass(slots=True)
class Applied:
    """One outcome per command; the locked sections and the holds as the commit leaves them;
    what the batch did, counted."""

    outcomes: list[Outcome]
    sections: dict[str, Section]
    new_holds: list[Hold] = field(default_factory=list)
    changed_holds: list[Hold] = field(default_factory=list)
    changes: Changes = field(default_factory=Changes)


def apply_commands(conn: Connection, commands: Sequence[Command], now: datetime) -> Applied:
    """Decide `commands` in order on their locked rows and write the result; don't commit."""
    inventory = load_inventory(conn, commands, now)
    decisions = decide(commands, working_copy(inventory), now, new_id)
    if decisions.short and load_expired(conn, inventory, commands, now):
        decisions = decide(commands, working_copy(inventory), now, new_id, expired_loaded=True)
    write_effects(conn, decisions.effects, now)
    effects = decisions.effects
    return Applied(
        decisions.outcomes,
        sections_after(inventory, decisions),
        effects.new_holds,
        list(effects.changed_holds.values()),
        Changes.of(effects),
    )


def working_copy(inventory: Inventory) -> Inventory:
    """A copy to decide on: the sections are changed in place, the rest is replaced."""
    return Inventory(
        sections={ident: section.copy() for ident, section in inventory.sections.items()},
        holds=dict(inventory.holds),
        bookings=dict(inventory.bookings),
        tallies=dict(inventory.tallies),
        events=inventory.events,
        answers=inventory.answers,
        busy_keys=inventory.busy_keys,
    )


def sections_after(inventory: Inventory, decisions: Decisions) -> dict[str, Section]:
    """Every locked section as stored once the batch commits (its version bumped if written)."""
    after = {}
    for ident, section in inventory.sections.items():
        changed = decisions.effects.sections.get(ident)
        if changed is None:
            after[ident] = section
        else:
            changed.version += 1
            after[ident] = changed
    return after
