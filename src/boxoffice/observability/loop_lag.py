"""How late this process's event loop runs what is due: the wait every request shares.

A timer is due every LAG_PROBE_SECONDS; how late it runs is the loop's lag at that
moment, observed in `boxoffice_event_loop_lag_seconds`. A loop with more ready work than
it can run in time (an on-sale's arrival storm, a slow synchronous call) runs every
callback late by about as much, so each request waits that long on each of its steps,
whatever its own work costs: the figure says "add processes", where a route's latency
alone cannot say why. Ten timers a second cost nothing measurable.
"""

from __future__ import annotations

import asyncio
import time

from boxoffice.observability import metrics

LAG_PROBE_SECONDS = 0.1


class LoopLag:
    """The probe: one timer at a time, rescheduled as it runs, while started."""

    def __init__(self, every_seconds: float = LAG_PROBE_SECONDS) -> None:
        self._every = every_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # time.perf_counter() the running timer is due at

    def start(self) -> None:
        if self._timer is None:
            self._loop = asyncio.get_running_loop()
            self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        assert self._loop is not None
        # perf_counter, not the loop's clock: uvloop's counts whole milliseconds.
        self._due = time.perf_counter() + self._every
        self._timer = self._loop.call_later(self._every, self._tick)

    def _tick(self) -> None:
        # A timer can run up to a millisecond early (the loop's clock is rounded).
        metrics.EVENT_LOOP_LAG.observe(max(0.0, time.perf_counter() - self._due))
        self._schedule()
