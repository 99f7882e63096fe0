"""Polls at the pace they were told: a ticket polled again too soon gets 429.

Each answer to a waiting ticket says `pollAfterSeconds`; a client that polls
sooner gains nothing (the answer would be the same, a refresh later at most)
and costs the server a request, so it is refused. A little earlier than told
is let by (`SLACK`): timers drift and networks jitter.

Per process and bounded: the last `capacity` tickets are remembered, the
oldest forgotten first. A client spreading its polls over several processes
is paced by each of them, so at most the number of processes times faster.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from boxoffice.domain.errors import PollTooSoon

__all__ = ["SLACK", "PollPacer"]

SLACK = 0.8  # a poll after 80 % of the interval told is on time


class PollPacer:
    """The earliest moment each ticket may poll again, for the last `capacity` tickets."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._next: OrderedDict[str, float] = OrderedDict()

    def check(self, ticket: str, now: float) -> None:
        """Raise `PollTooSoon` if `ticket` polls before its time (`now`: in seconds)."""
        earliest = self._next.get(ticket)
        if earliest is not None and now < earliest:
            raise PollTooSoon(max(1, math.ceil(earliest - now)))

    def told(self, ticket: str, now: float, poll_after_seconds: int) -> None:
        """`ticket` was told to poll again in `poll_after_seconds`."""
        self._next[ticket] = now + poll_after_seconds * SLACK
        self._next.move_to_end(ticket)
        while len(self._next) > self._capacity:
            self._next.popitem(last=False)

    def __len__(self) -> int:
        return len(self._next)
