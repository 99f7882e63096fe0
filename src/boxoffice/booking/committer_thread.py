"""PostgreSQL: the committer's own thread, event loop and engine.

On the server's event loop the committer's next step waits behind every
request the loop has ready: measured in the checkout, 3.6 ms at p90 and 9.4 ms
at p99 for a batch that PostgreSQL runs in about 3 (docs/performance.md).
On a thread of its own, a batch's answer from PostgreSQL wakes it when it
arrives, and it takes the interpreter from the server's loop within the
switch interval (`sys.setswitchinterval`, set by `start`).

asyncpg's connections belong to the loop that opened them, so the thread has
an engine of its own (`Database.for_another_loop`): the kept connections come
from it. Everything else stays on the server's loop: the queue is handed over
under a lock, and answers go back with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from boxoffice.db.database import Database

T = TypeVar("T")

# The interpreter's default (5 ms) would let the server's loop keep it that long before
# the committer, woken by PostgreSQL's answer, gets it: as long as the wait we move away from.
SWITCH_INTERVAL_SECONDS = 0.001


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class CommitterThread:
    """An event loop on a daemon thread, and a database engine that lives on it."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.database: Database | None = None  # the thread's engine, once started

    async def start(self) -> Database:
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        started: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()

        def run() -> None:
            loop = _new_loop()
            asyncio.set_event_loop(loop)
            started.set_result(loop)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="boxoffice-committer", daemon=True)
        self._thread.start()
        self._loop = await asyncio.wrap_future(started)
        self.database = await self.run(self._open())
        return self.database

    async def _open(self) -> Database:
        return self._database.for_another_loop()

    @property
    def running(self) -> bool:
        return self._loop is not None

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run `callback(*args)` on the thread's loop, from any thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(callback, *args)

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the thread's loop and wait for it from the caller's."""
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    async def stop(self) -> None:
        """Close the thread's engine, stop its loop and wait for the thread to end."""
        loop, thread, database = self._loop, self._thread, self.database
        self._loop = self._thread = self.database = None
        if loop is None or thread is None:
            return
        if database is not None:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(database.dispose(), loop))
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)
