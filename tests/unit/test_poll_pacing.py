"""Polls at the pace they were told: early ones refused, the memory bounded."""

from __future__ import annotations

import pytest

from boxoffice.domain.errors import PollTooSoon
from boxoffice.domain.poll_pacing import SLACK, PollPacer


def test_a_poll_before_its_time_is_refused_with_how_long_to_wait() -> None:
    pacer = PollPacer(10)
    pacer.check("t", 100.0)  # never seen: on time
    pacer.told("t", 100.0, 10)
    with pytest.raises(PollTooSoon) as refused:
        pacer.check("t", 101.0)
    assert refused.value.retry_after_seconds == 7  # 10 × 0.8 - 1, rounded up
    pacer.check("t", 100.0 + 10 * SLACK)  # a little early is on time
    pacer.check("u", 101.0)  # another ticket is not held back


def test_at_least_one_second_is_asked_for() -> None:
    pacer = PollPacer(10)
    pacer.told("t", 0.0, 1)
    with pytest.raises(PollTooSoon) as refused:
        pacer.check("t", 0.7)
    assert refused.value.retry_after_seconds == 1


def test_the_oldest_tickets_are_forgotten_first() -> None:
    pacer = PollPacer(3)
    for ticket in "abcd":
        pacer.told(ticket, 0.0, 30)
    assert len(pacer) == 3
    pacer.check("a", 1.0)  # forgotten: let by
    with pytest.raises(PollTooSoon):
        pacer.check("d", 1.0)
    pacer.told("b", 0.0, 30)  # told again: the newest now
    pacer.told("e", 0.0, 30)
    pacer.check("c", 1.0)  # c was the oldest
    with pytest.raises(PollTooSoon):
        pacer.check("b", 1.0)
