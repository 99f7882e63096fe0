"""Stopping a process's room watch lets the pass under way finish: a pass cancelled in
its database read could be cancelled while its connection went back to the pool, and a
shutdown landing on one (a refresh every 250 ms) left a traceback in the log."""

from __future__ import annotations

import asyncio

from boxoffice.db.database import Database
from boxoffice.services.clock import FakeClock
from boxoffice.services.room_watch import RoomWatch


async def test_stop_lets_the_pass_under_way_finish(database: Database) -> None:
    watch = RoomWatch(
        database, clock=FakeClock(), refresh_seconds=0.01, tick_seconds=0, clock_skew_seconds=2
    )
    entered, finished = asyncio.Event(), asyncio.Event()
    original = watch.refresh
    passes = 0

    async def slow_refresh() -> None:
        nonlocal passes
        passes += 1
        if passes > 1:  # the loop's passes, not the one start() makes
            entered.set()
            await asyncio.sleep(0.3)
            await original()
            finished.set()

    watch.refresh = slow_refresh  # type: ignore[method-assign]
    await watch.start()
    await asyncio.wait_for(entered.wait(), 10)
    await watch.stop()
    assert finished.is_set(), "the pass under way was cancelled"
    calls = passes
    await asyncio.sleep(0.1)
    assert passes == calls, "the loop stopped"
