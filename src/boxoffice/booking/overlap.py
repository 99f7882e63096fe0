"""Which queued commands may be written while other batches are still in flight (PostgreSQL).

A batch waits for its database round trip most of its life, and the committer
used to wait with it. On PostgreSQL a second batch may now be in flight
meanwhile. Two batches in flight are two transactions, exactly as two server
processes' batches always were: the database keeps the inventory exact either
way (row locks on the locked path, the sections' versions on the one-statement
path). What this module keeps is the queue's order, and the one-statement
path's odds:

- A command is taken only if it shares nothing it names (its sections, the
  hold it settles, its customer) with a batch in flight, or with an earlier
  command left waiting. So commands on the same rows are still decided in
  arrival order, and a batch never races one of ours for a section's version.
- A command whose rows cannot be known before they are read (a cancellation,
  a hold this process does not remember) is taken only while nothing is in
  flight, and everything behind it waits with it.

SQLite has one writer and one lane: every command is taken, as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from boxoffice.domain.commands import Book, Command, ConfirmHold, PlaceHold, ReleaseHold
from boxoffice.domain.ids import cached_canonical_id
from boxoffice.domain.model import Hold

# What a command names: ids of sections and holds, and customer ids. None: it may touch
# anything (its rows are only known once read).
Names = frozenset[str] | None

# How far into the queue a batch looks past commands that must wait.
LOOK_AHEAD = 4


class Queued(Protocol):
    @property
    def command(self) -> Command: ...

    @property
    def answer(self) -> Any: ...  # an asyncio.Future; done: its caller went away


Q = TypeVar("Q", bound=Queued)


def names_of(command: Command, active_hold: Callable[[str], Hold | None]) -> Names:
    """What `command` may write to; `active_hold` is the hold as this process remembers it."""
    if type(command) is Book:
        section = command.section_id
        names = {cached_canonical_id(section) or section}
        customer = command.customer_id
    elif isinstance(command, PlaceHold):
        names = {cached_canonical_id(item.section_id) or item.section_id for item in command.items}
        customer = command.customer_id
    elif isinstance(command, ConfirmHold | ReleaseHold):
        hold = active_hold(command.hold_id)
        if hold is None:
            return None
        names = {hold.id, *(item.section_id for item in hold.items)}
        customer = hold.customer_id
    else:  # a cancellation: its booking's section is read under lock
        return None
    if customer is not None:
        names.add(customer)
    return frozenset(names)


class Overlap:
    """The names of the batches in flight; picks the next batch from the queue."""

    def __init__(self, names: Callable[[Command], Names]) -> None:
        self._names = names
        self._in_flight: dict[int, Names] = {}  # batch token -> what it names

    @property
    def busy(self) -> bool:
        return bool(self._in_flight)

    def take(self, queue: deque[Q], limit: int) -> tuple[list[Q], int]:
        """Up to `limit` commands from `queue`, in order, that may run beside those in flight.

        Those left behind stay queued in order. Returns the batch and its token, which
        `landed` is given once the batch is over.
        """
        batch: list[Q] = []
        names: set[str] = set()
        anything = False  # the batch may touch anything
        if not self._in_flight:
            while queue and len(batch) < limit:
                waiting = queue.popleft()
                if not waiting.answer.done():  # skip callers that went away or gave up
                    batch.append(waiting)
                    found = self._names(waiting.command)
                    if found is None:
                        anything = True
                    elif not anything:
                        names.update(found)
            return batch, self._fly(None if anything else frozenset(names))
        blocked: set[str] = set()
        for flying in self._in_flight.values():
            if flying is None:
                return [], 0  # one in flight may touch anything: nothing beside it
            blocked.update(flying)
        left: list[Q] = []
        looked = 0
        while queue and len(batch) < limit and looked < LOOK_AHEAD * limit:
            waiting = queue.popleft()
            if waiting.answer.done():
                continue
            looked += 1
            found = self._names(waiting.command)
            if found is None:  # waits until nothing is in flight, and so does what follows
                left.append(waiting)
                break
            if blocked.isdisjoint(found):
                batch.append(waiting)
                names.update(found)
            else:
                left.append(waiting)
                blocked.update(found)
        queue.extendleft(reversed(left))
        return batch, (self._fly(frozenset(names)) if batch else 0)

    def _fly(self, names: Names) -> int:
        token = 1 + max(self._in_flight, default=0)
        self._in_flight[token] = names
        return token

    def landed(self, token: int) -> None:
        self._in_flight.pop(token, None)

    def clear(self) -> None:
        self._in_flight.clear()
