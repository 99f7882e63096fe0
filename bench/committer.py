"""Micro-benchmark of the booking path without HTTP: how many bookings/s one process commits.

    .venv/bin/python -m bench.committer [--database sqlite|postgresql] [--bookings 20000]
                                        [--sections 1] [--rounds 1] [--idempotent]
                                        [--poolers none,transaction]

It drives `booker.submit()` from N concurrent tasks in one process, so the
numbers isolate the combiner and the database work from the web stack. Besides
bookings/s it prints this process's CPU time per booking (all its threads,
not the database's), which is far steadier than throughput on shared cores,
and on PostgreSQL the whole cluster's CPU time per booking. `--poolers`
runs each strategy with each `DB_POOLER` value side by side in every round
(straight to PostgreSQL: what the setting itself costs, without a pooler's hop).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from tests.support.postgres import ThrowawayPostgres

from boxoffice.booking import make_booker
from boxoffice.config import async_database_url
from boxoffice.db.database import Database, Limits, Pooler
from boxoffice.db.migrate import upgrade
from boxoffice.domain.commands import Book
from boxoffice.domain.model import MAX_SECTIONS_PER_EVENT, EventSpec, SectionSpec
from boxoffice.services.events import create_event
from boxoffice.services.idempotency import idempotency


async def drive(
    url: str,
    strategy: str,
    bookings: int,
    concurrency: int,
    sections: int,
    *,
    idempotent: bool = False,
    pooler: Pooler = "none",
) -> tuple[float, float]:
    database = Database.from_url(
        async_database_url(url), limits=Limits(pool_size=20), pooler=pooler
    )
    booker = make_booker(strategy, database, max_tickets_per_booking=10)  # type: ignore[arg-type]
    await booker.start()
    requests: list[Book] = []
    for first in range(0, sections, MAX_SECTIONS_PER_EVENT):
        count = min(MAX_SECTIONS_PER_EVENT, sections - first)
        specs = tuple(SectionSpec(f"S{n}", 500, 1_000_000) for n in range(count))
        event = await create_event(database, EventSpec(f"Bench {first}", specs), datetime.now(UTC))
        requests += [Book(event.id, section.id, 1) for section in event.sections]
    # Spread like the HTTP benchmark: each booking picks a section at random.
    left = bookings

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            command = random.choice(requests)
            if idempotent:  # as the route makes it: a key, its fingerprint, per request
                command = replace(
                    command,
                    idempotency=idempotency(
                        f"k{left}",
                        scope=None,
                        operation="book",
                        request=(command.event_id, command.section_id, command.qty, None),
                    ),
                )
            await booker.submit(command)

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    await booker.stop()
    await database.dispose()
    return bookings / elapsed, cpu / bookings


def cluster_cpu_seconds(cluster: ThrowawayPostgres) -> float:
    """CPU time so far of the cluster's processes, those that exited included.

    The postmaster reaps every backend, so its children's time (`cutime`,
    `cstime`) holds the backends already gone; the running ones count their own.
    """
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, parent = int(entry.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(value) for value in fields[11:15])
        elif parent == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default="postgresql")
    parser.add_argument("--bookings", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--strategies", default="batched,direct")
    parser.add_argument("--sections", type=int, default=1, help="1: one hot section")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--idempotent", action="store_true", help="an Idempotency-Key on every booking"
    )
    parser.add_argument("--poolers", default="none", help="DB_POOLER values, side by side")
    args = parser.parse_args()
    postgres = ThrowawayPostgres().start() if args.database == "postgresql" else None
    try:
        for round_number in range(1, args.rounds + 1):
            for strategy in args.strategies.split(","):
                for pooler in args.poolers.split(","):
                    name = f"committer_{strategy}_{pooler}_{round_number}"
                    if postgres is not None:
                        url = postgres.create_database(name)
                    else:
                        url = f"sqlite:///{Path(tempfile.mkdtemp()) / f'{name}.db'}"
                    upgrade(url)
                    cluster_before = cluster_cpu_seconds(postgres) if postgres else 0.0
                    rate, cpu = asyncio.run(
                        drive(
                            url,
                            strategy,
                            args.bookings,
                            args.concurrency,
                            args.sections,
                            idempotent=args.idempotent,
                            pooler=pooler,  # type: ignore[arg-type]
                        )
                    )
                    cluster = ""
                    if postgres is not None:
                        spent = cluster_cpu_seconds(postgres) - cluster_before
                        cluster = f", {spent * 1e6 / args.bookings:.1f} µs in PostgreSQL"
                    print(
                        f"{args.database} {strategy} DB_POOLER={pooler} "
                        f"({args.sections} sections): {rate:,.0f} bookings/s, "
                        f"{cpu * 1e6:.1f} µs of CPU per booking in this process{cluster}"
                    )
    finally:
        if postgres is not None:
            postgres.stop()


if __name__ == "__main__":
    main()
