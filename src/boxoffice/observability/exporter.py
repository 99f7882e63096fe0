"""The metrics task of a server process: flushes every second, and looks at the database.

    every FLUSH_SECONDS          pools' usage sampled, then every local metric flushed
    every 0.1 s                  the event loop's lag observed (observability/loop_lag.py)
    every sample_seconds         this process probes the database (up? which server?);
                                 one process at a time reads the watched sections' seats
    every check_seconds          one process at a time checks them against their holds
                                 and bookings (services/inventory_check.py)
    at stop                      a last flush; with several workers, this process's live
                                 gauges are removed (observability/multiprocess.py)

The two run as separate tasks, so that a database that takes its statement
timeout to answer never delays a flush.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta

import structlog

from boxoffice.db.database import Database
from boxoffice.observability import metrics
from boxoffice.observability.loop_lag import LoopLag
from boxoffice.observability.multiprocess import forget_process, take_turn
from boxoffice.periodic import Periodic
from boxoffice.services.clock import Clock, system_clock
from boxoffice.services.inventory_check import Watch, watch_newest_sections

log = structlog.get_logger("boxoffice.metrics")

FLUSH_SECONDS = 1.0


class Exporter:
    """Keeps this process's metrics current while started."""

    def __init__(
        self,
        database: Database,
        *,
        sample_seconds: float,
        check_seconds: float,
        inventory_sections: int,
        clock: Clock = system_clock,
    ) -> None:
        self._database = database
        self._sample_seconds = sample_seconds
        self._check_seconds = timedelta(seconds=check_seconds)
        self._clock = clock
        self._next_check: datetime | None = None  # when this process may next ask for the turn
        self._inventory_sections = inventory_sections
        self._server: str | None = None  # which database server answered the last probe
        self._up: bool | None = None
        self._violations = 0
        self._flushing = Periodic("boxoffice-metrics", FLUSH_SECONDS, self._flush_pass)
        self._sampling = Periodic(
            "boxoffice-metrics-sampler", sample_seconds, self._sample_pass, at_once=True
        )
        self._loop_lag = LoopLag()

    async def start(self) -> None:
        self._loop_lag.start()
        self._flushing.start()
        if self._sample_seconds > 0:
            self._sampling.start()

    async def stop(self) -> None:
        """Let a flush or a sample under way finish, then flush one last time."""
        self._loop_lag.stop()
        await self._sampling.stop()
        await self._flushing.stop()
        self.flush()
        forget_process(os.getpid())

    def flush(self) -> None:
        """Sample the pools, then flush every local metric (a scrape calls it too)."""
        for pool, (checked_out, size) in self._database.pool_usage().items():
            metrics.POOL_CHECKED_OUT.set(checked_out, (pool,))
            metrics.POOL_SIZE.set(size, (pool,))
        metrics.flush()

    async def _flush_pass(self) -> None:
        try:
            self.flush()
        except Exception as error:  # a full disk, say: keep serving, try again
            log.warning("metrics_flush_failed", error=repr(error))

    async def _sample_pass(self) -> None:
        try:
            await self.sample()
        except Exception as error:  # the shared folder gone, say: try again later
            log.warning("metrics_sample_failed", error=repr(error))

    async def sample(self) -> None:
        """Probe the database; look at the watched sections, or check them, if it is our turn."""
        await self.probe()
        if not self._up or self._inventory_sections == 0:
            return
        now = self._clock()
        check = (
            self._check_seconds.total_seconds() > 0
            and (self._next_check is None or now >= self._next_check)
            and take_turn("inventory-check", self._check_seconds.total_seconds())
        )
        if check:
            self._next_check = now + self._check_seconds
        if check or take_turn("inventory", self._sample_seconds):
            await self.look(check=check)

    async def look(self, *, check: bool) -> None:
        """Read the watched sections' seats now, and check them if `check`."""
        try:
            watch = await watch_newest_sections(
                self._database, self._inventory_sections, check=check
            )
        except Exception as error:
            log.warning("inventory_metrics_failed", error=repr(error))
        else:
            self._publish(watch)

    async def probe(self) -> None:
        """Is the database up, and is it the server it was?"""
        try:
            server = await self._database.identify_server()
        except Exception as error:
            if self._up is not False:
                log.warning("database_probe_failed", error=repr(error))
            self._up = False
            metrics.DATABASE_UP.set(0)
            return
        if self._up is False:
            log.info("database_probe_answered")
        self._up = True
        metrics.DATABASE_UP.set(1)
        if self._server is not None and server != self._server:
            log.warning("database_server_changed", before=self._server, now=server)
            metrics.DATABASE_SERVER_CHANGES.inc()
        self._server = server

    def _publish(self, watch: Watch) -> None:
        seats, capacity = [], []
        for section in watch.sections:
            row = section.row
            labels = (section.event_id, row.id, section.name)
            capacity.append((labels, float(row.capacity)))
            seats += [
                ((*labels, "remaining"), float(row.remaining)),
                ((*labels, "held"), float(row.held)),
                ((*labels, "sold"), float(row.sold)),
            ]
        metrics.SECTION_SEATS.set_all(seats)
        metrics.SECTION_CAPACITY.set_all(capacity)
        if watch.violations is None:
            return
        metrics.INVENTORY_VIOLATIONS.set(len(watch.violations))
        metrics.INVENTORY_CHECKED.set(time.time())
        if len(watch.violations) != self._violations:  # logged when found, not every check
            for violation in watch.violations:
                log.error("inventory_violation", violation=str(violation))
        self._violations = len(watch.violations)
