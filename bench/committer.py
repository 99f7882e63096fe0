"""Micro-benchmark of the booking path without HTTP: how many bookings/s one process commits.

    .venv/bin/python -m bench.committer [--database sqlite|postgresql] [--bookings 20000]

It drives `booker.book()` from N concurrent tasks in one process, so the
numbers isolate the combiner and the database work from the web stack. Besides
bookings/s it prints this process's CPU time per booking (all its threads,
not the database's), which is far steadier than throughput on shared cores.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tests.support.postgres import ThrowawayPostgres

from boxoffice.booking import make_booker
from boxoffice.config import async_database_url
from boxoffice.db.database import Database
from boxoffice.db.migrate import upgrade
from boxoffice.domain.model import BookingRequest, EventSpec, SectionSpec
from boxoffice.services.events import create_event


async def drive(url: str, strategy: str, bookings: int, concurrency: int) -> tuple[float, float]:
    database = Database.from_url(async_database_url(url), pool_size=20)
    booker = make_booker(strategy, database, max_tickets_per_booking=10)  # type: ignore[arg-type]
    await booker.start()
    event = await create_event(database, EventSpec("Bench", (SectionSpec("GA", 500, 1_000_000),)))
    request = BookingRequest(event.id, event.sections[0].id, 1)
    left = bookings

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await booker.book(request)

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    await booker.stop()
    await database.dispose()
    return bookings / elapsed, cpu / bookings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default="postgresql")
    parser.add_argument("--bookings", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--strategies", default="batched,direct")
    args = parser.parse_args()
    postgres = ThrowawayPostgres().start() if args.database == "postgresql" else None
    try:
        for strategy in args.strategies.split(","):
            if postgres is not None:
                url = postgres.create_database(f"committer_{strategy}")
            else:
                url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'committer.db'}"
            upgrade(url)
            rate, cpu = asyncio.run(drive(url, strategy, args.bookings, args.concurrency))
            print(
                f"{args.database} {strategy}: {rate:,.0f} bookings/s, "
                f"{cpu * 1e6:.1f} µs of CPU per booking in this process"
            )
    finally:
        if postgres is not None:
            postgres.stop()


if __name__ == "__main__":
    main()
