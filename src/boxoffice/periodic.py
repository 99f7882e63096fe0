"""Background work repeated every few seconds in a server process, stopped cleanly.

The sweeper, the statistics of young tables, the metrics exporter, the waiting
room's refresh and ticks, and the fraud flags' writer each repeat one piece of
work on a timer. They share one way to stop: a pass under way is let finish
(up to `STOP_SECONDS`), and only then is the loop left. A pass cancelled inside
its database read could be cancelled while its connection goes back to the
pool (a traceback in the log at shutdown), or lose what it had taken to write
(the fraud flags popped from their queue).

A pass that raises is logged and the loop goes on: an outage or a bug in one
pass must not end the work for the life of the process. Work that has its own
view of failures (warn once per outage, say) catches them itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("boxoffice.periodic")

STOP_SECONDS = 5.0  # a pass under way at stop is waited for this long, then cancelled

# One pass. `False` means nothing is left to do: the loop ends (None or True: go on).
Work = Callable[[], Awaitable[bool | None]]


class Periodic:
    """`work` every `seconds` while started: the first pass at once, or after `seconds`."""

    def __init__(
        self,
        name: str,
        seconds: float,
        work: Work,
        *,
        at_once: bool = False,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self.name = name
        self._seconds = seconds
        self._work = work
        self._at_once = at_once
        self._stop_seconds = stop_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        """Started, and neither stopped nor ended of itself (a pass returned False)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop; a second start while it runs does nothing. A loop stopped, or
        ended of itself, starts again."""
        if self._task is None or self._task.done():
            # Each run has its own signal: a start during a stop must not take the signal
            # the stopping run waits on.
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._stopping), name=self.name)

    async def stop(self) -> None:
        """Let a pass under way finish (up to `stop_seconds`), then end the loop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        _, late = await asyncio.wait([task], timeout=self._stop_seconds)
        if late:
            log.warning("periodic_pass_cancelled", task=self.name, waited=self._stop_seconds)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self, stopping: asyncio.Event) -> None:
        if not self._at_once and await _stopped_within(stopping, self._seconds):
            return
        while True:
            try:
                if await self._work() is False:
                    return
            except Exception:  # logged; the next pass tries again
                log.exception("periodic_pass_failed", task=self.name)
            if await _stopped_within(stopping, self._seconds):
                return


async def _stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if asked to stop: whether the loop is to end."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
    return stopping.is_set()
