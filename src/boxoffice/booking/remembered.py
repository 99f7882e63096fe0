"""One round trip per batch on PostgreSQL: decide from remembered seats, verify while writing.

The committer remembers each section as its last batch left it. For a batch
whose sections are all remembered, it decides in arrival order from copies of
those sections (`batch.decide`, the same rule as under lock), then sends ONE
statement, outside any explicit transaction, so PostgreSQL runs it as its own
atomic transaction:

    UPDATE sections SET remaining = remaining - taken
     WHERE id = section AND remaining = expected          -- compare and set
    INSERT INTO bookings ... only for the sections whose UPDATE matched

A section matches only if nobody else booked it since we remembered it, so
every decision about it (bookings and refusals alike) was made on the true
count. Sections that did not match (another process booked them, or a
request failed) are written by nothing; their requests are retried under row
locks by the caller, which also refreshes what is remembered.

No row lock is held across a network round trip, so the hot row is locked
only while PostgreSQL executes one statement.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from boxoffice.booking.batch import PG_INSERT_BOOKINGS, Outcome, Target, booking_columns, decide
from boxoffice.db.driver import DriverStatement
from boxoffice.domain.model import BookingRequest, Section

log = structlog.get_logger("boxoffice.booking")

# Run on asyncpg directly: this statement is the hot path (see `db/driver.py`).
_BOOK_IF_UNCHANGED = DriverStatement(
    text(
        f"""
    WITH t AS (
        SELECT * FROM unnest(CAST(:section_ids AS uuid[]), CAST(:expected AS integer[]),
                             CAST(:taken AS integer[])) AS t(id, expected, taken)
    ), locked AS (
        -- Row locks in id order, as on the locked path: processes cannot deadlock.
        SELECT s.id FROM sections AS s WHERE s.id = ANY(CAST(:section_ids AS uuid[]))
         ORDER BY s.id FOR UPDATE
    ), verified AS (
        UPDATE sections AS s SET remaining = s.remaining - t.taken
          FROM t JOIN locked ON locked.id = t.id
         WHERE s.id = t.id AND s.remaining = t.expected
        RETURNING s.id, s.remaining
    ), recorded AS (
        {PG_INSERT_BOOKINGS}
          JOIN verified ON verified.id = b.section_id
        RETURNING 1
    )
    SELECT CAST(id AS text), remaining FROM verified
    """
    )
)


class RememberedSections:
    """The sections as this process's last committed batches left them (bounded, LRU)."""

    def __init__(self, max_size: int = 100_000) -> None:
        self._sections: OrderedDict[str, Section] = OrderedDict()
        self._max_size = max_size

    def __len__(self) -> int:
        return len(self._sections)

    def copies(self, targets: Sequence[Target]) -> dict[str, Section] | None:
        """Working copies of every targeted section, or None if one is not remembered."""
        found: dict[str, Section] = {}
        for _, section_id in targets:
            if section_id is None:
                return None
            if section_id not in found:
                section = self._sections.get(section_id)
                if section is None:
                    return None
                found[section_id] = section.copy()
        return found

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


@dataclass(slots=True)
class Verified:
    """What the one statement settled, and what must be retried under lock."""

    outcomes: dict[int, Outcome]  # request index -> its final outcome
    retry: list[int]  # request indexes whose section had changed
    sections: dict[str, Section]  # the verified sections, as they are now
    stale: list[str]  # sections whose remembered count was wrong


async def book_if_unchanged(
    conn: AsyncConnection,
    requests: Sequence[BookingRequest],
    targets: Sequence[Target],
    remembered: dict[str, Section],
    now: datetime,
) -> Verified:
    """Decide from `remembered` copies and write in one autocommitted statement."""
    expected = {ident: section.remaining for ident, section in remembered.items()}
    decisions = decide(requests, targets, remembered, now)
    section_ids = sorted(decisions.taken)
    rows = await _BOOK_IF_UNCHANGED.fetch(
        conn,
        {
            "section_ids": section_ids,
            "expected": [expected[ident] for ident in section_ids],
            "taken": [decisions.taken[ident] for ident in section_ids],
            **booking_columns(decisions.new_bookings, now),
        },
    )
    now_remaining = {row[0]: row[1] for row in rows}
    verified = Verified({}, [], {}, [])
    for index, ((_, section_id), outcome) in enumerate(
        zip(targets, decisions.outcomes, strict=True)
    ):
        if outcome is not None and section_id in now_remaining:
            verified.outcomes[index] = outcome
        else:
            verified.retry.append(index)
    for ident in section_ids:
        section, remaining = remembered[ident], now_remaining.get(ident)
        if remaining is None:  # changed by someone else: its requests are retried
            verified.stale.append(ident)
        elif section.remaining != remaining:  # cannot happen; never raise after a commit
            log.error("remembered_count_mismatch", section=str(ident), stored=remaining)
            verified.stale.append(ident)
        else:
            verified.sections[ident] = section
    return verified
