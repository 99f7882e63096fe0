"""The audit trail: an append-only record of every attempt and change that touches seats.

Each record says what happened to `qty` seats of one section. Replayed in
order from each section's `create` record, the changes alone rebuild every
section's remaining, held and sold counts (`rebuild`); `boxoffice audit
verify` compares that with the stored rows. Refusals are recorded too, with
the code of the error that refused them, and move no seats.

    action    seats move (outcome "ok")
    create    capacity -> remaining
    book      remaining -> sold
    hold      remaining -> held
    confirm   held -> sold
    release   held -> remaining
    expire    held -> remaining
    cancel    sold -> remaining
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Action = Literal["create", "book", "hold", "confirm", "release", "expire", "cancel"]
Outcome = Literal["ok", "refused"]

# (remaining, held, sold) change per seat, for each action that succeeded.
_MOVES: dict[str, tuple[int, int, int]] = {
    "create": (1, 0, 0),
    "book": (-1, 0, 1),
    "hold": (-1, 1, 0),
    "confirm": (0, -1, 1),
    "release": (1, -1, 0),
    "expire": (1, -1, 0),
    "cancel": (1, 0, -1),
}


@dataclass(slots=True)  # not frozen: one per booking, and frozen ones are slow to make
class AuditRecord:
    at: datetime
    event_id: str
    section_id: str | None
    action: Action
    qty: int
    outcome: Outcome = "ok"
    reason: str | None = None
    customer_id: str | None = None
    hold_id: str | None = None
    booking_id: str | None = None
    request_id: str | None = None
    seq: int | None = None  # given by the database when the record is stored


@dataclass(slots=True)
class Counts:
    remaining: int = 0
    held: int = 0
    sold: int = 0

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.remaining, self.held, self.sold)


def rebuild(records: Iterable[AuditRecord]) -> dict[str, Counts]:
    """Every section's counts, from its trail alone, replayed in sequence order."""
    counts: dict[str, Counts] = {}
    for record in records:
        if record.outcome != "ok" or record.section_id is None:
            continue
        remaining, held, sold = _MOVES[record.action]
        section = counts.setdefault(record.section_id, Counts())
        section.remaining += remaining * record.qty
        section.held += held * record.qty
        section.sold += sold * record.qty
    return counts
