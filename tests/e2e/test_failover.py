"""Automatic failover under load: the primary dies, the synchronous secondary takes over,
and nothing that was acknowledged is lost or done twice.

pg_auto_failover (Debian's `postgresql-15-auto-failover`; `make test` installs it)
runs a monitor, a primary and a synchronous secondary on loopback; Boxoffice
(`--workers 2`) reaches them through one URL naming both; clients book, hold
and confirm under Idempotency-Keys and retry every failure with the same key.
The primary's postmaster and its keeper are killed with SIGKILL mid-load. The
monitor here detects a dead node in about 3 s instead of pg_auto_failover's
50 s defaults (`make failover-demo` measures both; docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.auto_failover import AutoFailoverFormation, auto_failover_formation
from tests.support.failover_drill import FAST_DETECTION, failover_drill

pytestmark = [pytest.mark.e2e, pytest.mark.failover]


@pytest.fixture
def formation() -> Iterator[AutoFailoverFormation]:
    with auto_failover_formation(monitor_settings=FAST_DETECTION) as running:
        yield running


async def test_kill_9_of_the_primary_loses_no_acknowledged_booking_and_books_none_twice(
    formation: AutoFailoverFormation, tmp_path: Path
) -> None:
    report = await failover_drill(formation, log_dir=tmp_path)

    # The drill was what it says: synchronous replication, a promotion, clients hit by it.
    assert report.sync_standby_names_before.startswith("ANY 1 ("), report.sync_standby_names_before
    assert report.new_primary != report.old_primary
    assert report.outage.retried_until_answered > 0, "no request was caught by the failover"
    # Every request was answered 2xx in the end: the switch cost 503s and retries, never
    # a 500, a refusal or a request left without an answer.
    assert report.failures == []
    # On the new primary: everything acknowledged, nothing that no client was told of
    # (a retry that booked again would leave one), holds as answered, invariants whole.
    assert report.lost_bookings == set()
    assert report.unanswered_bookings == set()
    assert report.lost_holds == set()
    assert report.holds_unlike_answered == {}
    assert len(report.acknowledged_bookings) > 0
    assert report.check_returncode == 0, report.check_output
