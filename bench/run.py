"""`make bench`: the flash-sale benchmark, side by side in one run, on PostgreSQL and SQLite.

For each database and scenario it starts a fresh database and server, loads it
with wrk, then checks the inventory straight from the database: nothing
oversold, no seat leaked (capacity == remaining + booked), every 201 stored.

The machines are shared and noisy: a run's figures swing by a tenth from one
minute to the next. So the whole list of scenarios runs `--rounds` times, one
round after the other; each ratio is taken within a round (its two scenarios
ran a minute apart at most), and the report gives the median round with the
range. The scenario table shows, for each scenario, its median round.

    .venv/bin/python -m bench.run [--duration 8] [--rounds 3] [--warmup 2]
                                  [--connections 64,256]
                                  [--databases postgresql,sqlite] [--only LABELS]

The full default run writes bench/results/latest.{json,md},
bench/results/throughput.png, and the table between the markers in
docs/performance.md; a run with other options writes bench/results/partial.*
(not committed) and leaves the published figures alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pwd
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import func, inspect, select
from tests.support.keys import first_admin_key
from tests.support.pgbouncer import PGBOUNCER, ThrowawayPgbouncer
from tests.support.postgres import ThrowawayPostgres
from tests.support.server import ServerProcess, process_group, processes

from boxoffice.config import async_database_url
from boxoffice.db.database import Database
from boxoffice.db.migrate import upgrade
from boxoffice.db.tables import bookings, hold_items, sections
from boxoffice.services.audit import verify as audit_verify

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "book.lua"
CHECKOUT_LUA = ROOT / "bench" / "checkout.lua"
EVENT_READ_LUA = ROOT / "bench" / "event_read.lua"
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
console = Console()
EXTRA_ENV: dict[str, str] = {}  # server settings from --set NAME=VALUE


@dataclass(frozen=True)
class Scenario:
    name: str
    strategy: str | None  # None: a no-op ceiling
    sections: int
    workers: int = 1
    sqlite_writer: str | None = None  # SQLITE_WRITER, when not the default
    databases: tuple[str, ...] = ("postgresql", "sqlite")
    # book, checkout, event-read (GET /events/{id}), noop (our own no-op route), bare (bare
    # FastAPI)
    app: str = "book"
    idempotent: bool = False  # an Idempotency-Key of its own on every request
    keyed: bool = False  # access control on, a customer's API key on every request
    baseline: bool = False  # served by the --baseline tree's code, not this one
    queue_timeout_ms: int | None = None  # BOOKING_QUEUE_TIMEOUT_MS, when not the default
    # "safe": DB_POOLER=transaction, straight to PostgreSQL (what the setting alone costs);
    # "pgbouncer": the same setting, through pgbouncer in transaction mode.
    pooler: str | None = None
    staleness_ms: int | None = None  # AVAILABILITY_MAX_STALENESS_MS, when not the default
    revalidate: bool = False  # event-read: If-None-Match with the ETag last seen (304s)
    committer: str | None = None  # BOOKING_COMMITTER, when not the default

    @property
    def label(self) -> str:
        suffix = f" w{self.workers}" if self.workers > 1 else ""
        writer = f" {self.sqlite_writer}-writer" if self.sqlite_writer else ""
        before = " (before)" if self.baseline else ""
        queue = "" if self.queue_timeout_ms is None else f" queue-timeout-{self.queue_timeout_ms}"
        pooler = {None: "", "safe": " pooler-safe", "pgbouncer": " via pgbouncer"}[self.pooler]
        cache = {None: "", 0: " uncached"}.get(self.staleness_ms, f" stale-{self.staleness_ms}ms")
        revalidated = " 304" if self.revalidate else ""
        committer = f" {self.committer}-committer" if self.committer else ""
        return f"{self.name}{revalidated}{cache}{suffix}{writer}{committer}{queue}{pooler}{before}"


def pooled(name: str, sections: int, app: str = "book") -> list[Scenario]:
    """`name` with DB_POOLER=transaction straight to PostgreSQL, then through pgbouncer in
    transaction mode: run right after the direct scenario, so each ratio compares
    neighbours."""
    return [
        Scenario(name, "batched", sections, app=app, pooler=pooler, databases=("postgresql",))
        for pooler in ("safe", "pgbouncer")
    ]


SCENARIOS = [
    Scenario("ceiling", None, 1, app="noop"),
    Scenario("bare ceiling", None, 1, app="bare"),
    Scenario("hot direct", "direct", 1),
    Scenario("hot batched", "batched", 1),
    *pooled("hot batched", 1),
    Scenario("hot idempotent", "batched", 1, idempotent=True),
    Scenario("hot keyed", "batched", 1, keyed=True),
    Scenario("spread direct", "direct", 1000),
    Scenario("spread batched", "batched", 1000),
    *pooled("spread batched", 1000),
    Scenario("checkout", "batched", 1000, app="checkout"),
    *pooled("checkout", 1000, app="checkout"),
    Scenario("ceiling", None, 1, workers=2, app="noop"),
    Scenario("hot batched", "batched", 1, workers=2),
    # The read storm (issue 12): everyone refreshing one event's page.
    Scenario("event read", "batched", 1, app="event-read"),
]

# Run only when named in --only: SQLite's group commits on a thread of the server
# process instead of the writer process, to compare the two side by side.
OPT_IN_SCENARIOS = [
    Scenario("hot batched", "batched", 1, sqlite_writer="thread", databases=("sqlite",)),
    Scenario("spread batched", "batched", 1000, sqlite_writer="thread", databases=("sqlite",)),
    # Backpressure off (issue 11): how long requests wait when nothing bounds the queue.
    Scenario("hot batched", "batched", 1, queue_timeout_ms=0),
    # The read storm without the availability cache (every read from the database, as
    # before issue 12), and with browsers revalidating their copy (304s).
    Scenario("event read", "batched", 1, app="event-read", staleness_ms=0),
    Scenario("event read", "batched", 1, app="event-read", revalidate=True),
    Scenario("event read", "batched", 1, app="event-read", workers=2),
    Scenario("event read", "batched", 1, app="event-read", workers=2, staleness_ms=0),
    # PostgreSQL's group commit in one committer process shared by the workers
    # (BOOKING_COMMITTER=process), against each worker's own (the default), with two workers.
    Scenario(
        "hot batched", "batched", 1, workers=2, committer="process", databases=("postgresql",)
    ),
    Scenario("checkout", "batched", 1000, app="checkout", workers=2, databases=("postgresql",)),
    Scenario(
        "checkout",
        "batched",
        1000,
        app="checkout",
        workers=2,
        committer="process",
        databases=("postgresql",),
    ),
]

# With --baseline DIR: the same scenarios served by an older tree's code (a `git worktree`
# of an earlier commit), side by side with this one's in every round.
BASELINE_SCENARIOS = [
    Scenario("ceiling", None, 1, app="noop", baseline=True),
    Scenario("hot batched", "batched", 1, baseline=True),
    Scenario("spread batched", "batched", 1000, baseline=True),
    # Only when the older tree has checkout at all (it came with issue 9).
    Scenario("checkout", "batched", 1000, app="checkout", baseline=True),
    # Only when the older tree has API keys (they came with issue 10).
    Scenario("hot keyed", "batched", 1, keyed=True, baseline=True),
    Scenario("event read", "batched", 1, app="event-read", baseline=True),
]
BASELINE: Path | None = None  # --baseline


@dataclass
class Result:
    database: str
    scenario: str
    connections: int
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    non_2xx_share: float
    socket_errors: int
    created: int
    stored: int
    oversold: int
    leaked: int
    verified: bool
    server_cpu_us: float = 0.0  # the server's processes, per measured request
    postgres_cpu_us: float = 0.0  # every PostgreSQL process, per measured request
    audit_verified: bool | None = None  # `audit verify` after the run (None: not checked)


def ensure_pgbouncer() -> None:
    if shutil.which("pgbouncer") or Path(PGBOUNCER).exists():
        return
    console.print("pgbouncer is missing: installing it from Debian's packages")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "pgbouncer"], check=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    console.print("wrk is missing: installing it from Debian's packages")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time so far of each of `pids` still running."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            found[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings by the processes alive at the second one.

    A process started in between counts whole; one that exited in between is
    lost (PostgreSQL backends of connections the pool closed): an undercount,
    never a negative.
    """
    return sum(now - before.get(pid, 0.0) for pid, now in after.items())


def postgres_processes() -> list[int]:
    try:
        uid = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        return []
    return processes(lambda entry: entry.stat().st_uid == uid)


def fresh_database(
    kind: str, postgres: ThrowawayPostgres | None, workdir: Path, *, baseline: bool = False
) -> str:
    if kind == "sqlite":
        url = f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    else:
        assert postgres is not None
        url = postgres.create_database(f"bench_{uuid.uuid4().hex[:8]}")
    if baseline:  # the baseline's own migrations: its server wants its own schema
        subprocess.run(
            [sys.executable, "-c", f"from boxoffice.db.migrate import upgrade; upgrade({url!r})"],
            env={**os.environ, "PYTHONPATH": baseline_path()},
            check=True,
            capture_output=True,
        )
    else:
        upgrade(url)
    return url


def baseline_path() -> str:
    assert BASELINE is not None
    return f"{BASELINE / 'src'}{os.pathsep}{BASELINE}"


def create_targets(
    base_url: str, sections_wanted: int, path: Path, admin: str | None = None
) -> None:
    """Events with `sections_wanted` sections in all, capacity enough for the whole run."""
    lines = []
    headers = {"Authorization": f"Bearer {admin}"} if admin else None
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
        remaining = sections_wanted
        while remaining:
            count = min(100, remaining)
            capacity = 1_000_000 if sections_wanted == 1 else 20_000
            body = {
                "name": "Flash sale",
                "sections": [
                    {"name": f"S{i}", "price": 5, "capacity": capacity} for i in range(count)
                ],
            }
            event = client.post("/events", json=body).raise_for_status().json()
            lines += [f"{event['id']} {s['id']}" for s in event["sections"]]
            remaining -= count
    path.write_text("\n".join(lines) + "\n")


def customer_key(base_url: str, admin: str) -> str:
    """A customer's API key, made by the admin over HTTP, for a keyed scenario's requests."""
    made = httpx.post(
        f"{base_url}/keys",
        json={"role": "customer", "customerId": "bench"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    ).raise_for_status()
    key: str = made.json()["key"]
    return key


def wrk_script(scenario: Scenario, targets: Path) -> list[str]:
    """The Lua script and its arguments for `scenario`."""
    if scenario.app == "checkout":
        return [str(CHECKOUT_LUA), "--", str(targets)]
    if scenario.app == "event-read":
        return [str(EVENT_READ_LUA), "--", str(targets), *(["revalidate"] * scenario.revalidate)]
    path = "/book" if scenario.app == "book" else "/noop"
    return [str(LUA), "--", path, str(targets), *(["idempotent"] if scenario.idempotent else [])]


def run_wrk(
    wrk: str,
    url: str,
    script: list[str],
    connections: int,
    duration: int,
    authorization: str | None = None,
) -> Any:
    out = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            script[0],
            url,
            *script[1:],
        ],
        capture_output=True,
        text=True,
        timeout=duration + 120,
        check=True,
        env={**os.environ, **({"BENCH_AUTHORIZATION": authorization} if authorization else {})},
    ).stdout
    match = re.search(r"BENCH_JSON (\{.*\})", out)
    if not match:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    return json.loads(match.group(1))


async def verify(database_url: str, *, baseline: bool = False) -> tuple[int, int, int, bool | None]:
    """(stored bookings, oversold sections, leaked seats, audit trail agrees) from the database.

    A leaked seat is one the section's counts do not account for: capacity must be
    remaining + held + sold, sold the seats of confirmed bookings, held those of the
    holds still holding seats. A baseline from before checkout has remaining only.
    """
    database = Database.from_url(async_database_url(database_url))
    try:
        async with database.engine.connect() as conn:
            stored = (await conn.execute(select(func.count()).select_from(bookings))).scalar_one()
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("sections")}
            )
            if baseline and "held" not in columns:
                booked = (
                    select(bookings.c.section_id, func.sum(bookings.c.qty).label("seats"))
                    .group_by(bookings.c.section_id)
                    .subquery()
                )
                rows = (
                    await conn.execute(
                        select(
                            sections.c.capacity,
                            sections.c.remaining,
                            func.coalesce(booked.c.seats, 0),
                        ).outerjoin(booked, booked.c.section_id == sections.c.id)
                    )
                ).all()
                oversold = sum(1 for _, remaining, _ in rows if remaining < 0)
                leaked = sum(abs(cap - rem - int(seats)) for cap, rem, seats in rows)
                return int(stored), oversold, leaked, None
            sold = (
                select(bookings.c.section_id, func.sum(bookings.c.qty).label("seats"))
                .where(bookings.c.status == "confirmed")
                .group_by(bookings.c.section_id)
                .subquery()
            )
            held = (
                select(hold_items.c.section_id, func.sum(hold_items.c.qty).label("seats"))
                .where(hold_items.c.active)
                .group_by(hold_items.c.section_id)
                .subquery()
            )
            rows = (
                await conn.execute(
                    select(
                        sections.c.capacity,
                        sections.c.remaining,
                        sections.c.held,
                        sections.c.sold,
                        func.coalesce(sold.c.seats, 0),
                        func.coalesce(held.c.seats, 0),
                    )
                    .outerjoin(sold, sold.c.section_id == sections.c.id)
                    .outerjoin(held, held.c.section_id == sections.c.id)
                )
            ).all()
        _, mismatches = await audit_verify(database)
    finally:
        await database.dispose()
    oversold = sum(1 for row in rows if min(row[1], row[2], row[3]) < 0)
    leaked = sum(
        abs(cap - rem - hel - sol) + abs(sol - int(booked)) + abs(hel - int(holding))
        for cap, rem, hel, sol, booked, holding in rows
    )
    return int(stored), oversold, leaked, not mismatches


def server_env(scenario: Scenario) -> dict[str, str]:
    """The server's settings for `scenario`, then those given with --set."""
    env = {
        "BOOKING_STRATEGY": scenario.strategy or "batched",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": "20",
        # Keys are checked in the "keyed" scenarios only: the others, and both ceilings,
        # measure what they always did, so "hot keyed / ceiling" is the whole cost of keys.
        "BOXOFFICE_OPEN_ACCESS": "false" if scenario.keyed else "true",
        # Likewise rate limits: on in the keyed scenarios, with a quota no run exhausts, so
        # that their cost is in "hot keyed / ceiling"; off elsewhere (one address, one key).
        "RATE_LIMITS_ENABLED": "true" if scenario.keyed else "false",
        "RATE_LIMIT_PURCHASE": "100000000/1s",
    }
    if scenario.sqlite_writer:
        env["SQLITE_WRITER"] = scenario.sqlite_writer
    if scenario.committer:
        env["BOOKING_COMMITTER"] = scenario.committer
    if scenario.queue_timeout_ms is not None:
        env["BOOKING_QUEUE_TIMEOUT_MS"] = str(scenario.queue_timeout_ms)
    if scenario.pooler:
        env["DB_POOLER"] = "transaction"
    if scenario.staleness_ms is not None:
        env["AVAILABILITY_MAX_STALENESS_MS"] = str(scenario.staleness_ms)
    if scenario.baseline:
        env["PYTHONPATH"] = baseline_path()
    return {**env, **EXTRA_ENV}


FACTORIES = {"noop": "bench.noop_app:create_noop_app", "bare": "bench.bare_app:create_bare_app"}


def run_one(
    wrk: str,
    kind: str,
    scenario: Scenario,
    connections: int,
    duration: int,
    postgres: ThrowawayPostgres | None,
    workdir: Path,
    round_number: int,
    warmup: int = 0,
    bouncer: ThrowawayPgbouncer | None = None,
) -> Result:
    url = fresh_database(kind, postgres, workdir, baseline=scenario.baseline)
    env = server_env(scenario)
    admin = first_admin_key(url) if scenario.keyed else None
    factory = FACTORIES.get(scenario.app)
    served = url
    if scenario.pooler == "pgbouncer":
        assert bouncer is not None
        served = bouncer.url(url.rsplit("/", 1)[1])
    server = ServerProcess(
        served,
        workers=scenario.workers,
        env=env,
        log_dir=workdir,
        asgi_factory=factory,
        cwd=BASELINE if scenario.baseline else None,  # its `bench` package, not ours
    )
    with server:
        targets = workdir / "targets.txt"
        if scenario.app == "bare":
            targets.write_text(f"{uuid.uuid4()} {uuid.uuid4()}\n")  # nothing to create
        else:
            create_targets(server.url, scenario.sections, targets, admin)
        authorization = None if admin is None else f"Bearer {customer_key(server.url, admin)}"
        script = wrk_script(scenario, targets)
        # Warm-up, not measured: connections opened, sections remembered, code paths hot.
        warm = (
            run_wrk(wrk, server.url, script, connections, warmup, authorization) if warmup else None
        )
        if kind == "postgresql" and postgres is not None and warmup:
            # The statistics a running database has: autovacuum analyzes a sale's tables
            # within a minute (migration 0009), but a round is seconds on a new database,
            # planned by defaults, where the batch's statement read every hold of the
            # event per confirm (docs/performance.md, "Statistics").
            postgres.psql("ANALYZE", database=url.rsplit("/", 1)[1])
        assert server.process is not None
        server_pids = process_group(server.process.pid)
        server_before = cpu_seconds(server_pids)
        db_before = cpu_seconds(postgres_processes()) if kind == "postgresql" else {}
        stats = run_wrk(wrk, server.url, script, connections, duration, authorization)
        server_cpu = cpu_spent(server_before, cpu_seconds(server_pids))
        db_cpu = (
            cpu_spent(db_before, cpu_seconds(postgres_processes())) if kind == "postgresql" else 0.0
        )
    if served != url and bouncer is not None:
        # Its server connections to this database go now, not after pgbouncer's idle timeouts:
        # a database per scenario would otherwise pile them up against max_connections.
        bouncer.admin(f"KILL {url.rsplit('/', 1)[1]}")
    stored, oversold, leaked, audit_ok = asyncio.run(verify(url, baseline=scenario.baseline))
    requests = max(stats["requests"], 1)
    created = stats["created"] + (warm["created"] if warm else 0)
    phases = [stats, warm] if warm else [stats]
    errors = ("err_connect", "err_read", "err_write", "err_timeout")
    if scenario.strategy is None:
        verified = stored == 0
    else:
        # A request cut off when wrk stops may commit without wrk seeing its 201. Each
        # confirmation stores one booking (1 seat each), so checkouts count the same way.
        cut_off = connections * (2 if warm else 1)
        verified = (
            oversold == 0
            and leaked == 0
            and created <= stored <= created + cut_off
            and audit_ok is not False
        )
    # The warm-up's failures count as much as the measured run's.
    socket_errors = sum(phase[k] for phase in phases for k in errors)
    non_2xx = sum(phase["other"] for phase in phases)
    return Result(
        database=kind,
        scenario=scenario.label,
        connections=connections,
        round=round_number,
        rps=stats["requests"] / (stats["duration_us"] / 1e6),
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
        p999_ms=stats["p999_us"] / 1000,
        non_2xx_share=non_2xx / (requests + (warm["requests"] if warm else 0)),
        socket_errors=socket_errors,
        created=created,
        stored=stored,
        oversold=oversold,
        leaked=leaked,
        verified=verified,
        server_cpu_us=server_cpu * 1e6 / requests,
        postgres_cpu_us=db_cpu * 1e6 / requests,
        audit_verified=audit_ok,
    )


# name: (top scenario, bottom scenario, factor). A checkout is two requests: its ratio is
# of completed checkouts (request pairs) per second, half the requests.
RATIOS: dict[str, tuple[str, str, float]] = {
    "hot batched / ceiling": ("hot batched", "ceiling", 1.0),
    "hot batched / bare": ("hot batched", "bare ceiling", 1.0),
    "hot batched / direct": ("hot batched", "hot direct", 1.0),
    "hot idempotent / ceiling": ("hot idempotent", "ceiling", 1.0),
    "hot idempotent / bare": ("hot idempotent", "bare ceiling", 1.0),
    "hot keyed / ceiling": ("hot keyed", "ceiling", 1.0),
    "hot keyed / bare": ("hot keyed", "bare ceiling", 1.0),
    "spread batched / ceiling": ("spread batched", "ceiling", 1.0),
    "spread batched / bare": ("spread batched", "bare ceiling", 1.0),
    "spread batched / direct": ("spread batched", "spread direct", 1.0),
    "checkout pairs / ceiling": ("checkout", "ceiling", 0.5),
    "checkout pairs / bare": ("checkout", "bare ceiling", 0.5),
    "ceiling / bare": ("ceiling", "bare ceiling", 1.0),
    "hot batched / before": ("hot batched", "hot batched (before)", 1.0),
    "spread batched / before": ("spread batched", "spread batched (before)", 1.0),
    "ceiling / before": ("ceiling", "ceiling (before)", 1.0),
    "checkout / before": ("checkout", "checkout (before)", 1.0),
    "hot keyed / before": ("hot keyed", "hot keyed (before)", 1.0),
    "hot batched pooler-safe / direct": ("hot batched pooler-safe", "hot batched", 1.0),
    "hot batched via pgbouncer / direct": ("hot batched via pgbouncer", "hot batched", 1.0),
    "spread batched pooler-safe / direct": ("spread batched pooler-safe", "spread batched", 1.0),
    "spread batched via pgbouncer / direct": (
        "spread batched via pgbouncer",
        "spread batched",
        1.0,
    ),
    "checkout pooler-safe / direct": ("checkout pooler-safe", "checkout", 1.0),
    "checkout via pgbouncer / direct": ("checkout via pgbouncer", "checkout", 1.0),
    "event read / ceiling": ("event read", "ceiling", 1.0),
    "event read / bare": ("event read", "bare ceiling", 1.0),
    "event read / uncached": ("event read", "event read uncached", 1.0),
    "event read uncached / ceiling": ("event read uncached", "ceiling", 1.0),
    "event read uncached / bare": ("event read uncached", "bare ceiling", 1.0),
    "event read 304 / 200": ("event read 304", "event read", 1.0),
    "event read w2 / uncached w2": ("event read w2", "event read uncached w2", 1.0),
    "event read w2 / ceiling w2": ("event read w2", "ceiling w2", 1.0),
    "event read / before": ("event read", "event read (before)", 1.0),
}
TARGETS = {  # the issues' bars, shown next to the figures
    "hot batched / ceiling": 0.8,
    "hot batched / direct": 5.0,
    "spread batched / ceiling": 0.8,
    "hot idempotent / ceiling": 0.75,
    "hot keyed / ceiling": 0.75,
    "hot batched / bare": 0.7,
    "checkout pairs / ceiling": 0.35,
}


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    """Each ratio within each round, then the median round and the range over rounds."""
    by = {(r.database, r.scenario, r.connections, r.round): r.rps for r in results}
    rows = []
    for database, connections in sorted({(r.database, r.connections) for r in results}):
        row: dict[str, Any] = {"database": database, "connections": connections}
        for name, (top, bottom, factor) in RATIOS.items():
            per_round = [
                factor
                * by[(database, top, connections, n)]
                / by[(database, bottom, connections, n)]
                for n in sorted({r.round for r in results})
                if (database, top, connections, n) in by
                and by.get((database, bottom, connections, n))
            ]
            row[name] = (
                {
                    # The lower middle round for an even count, as in `medians`.
                    "median": statistics.median_low(per_round),
                    "min": min(per_round),
                    "max": max(per_round),
                    "rounds": per_round,
                }
                if per_round
                else None
            )
        rows.append(row)
    return rows


def medians(results: list[Result]) -> list[Result]:
    """For each scenario, its round with the median throughput (the lower one of two)."""
    groups: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.database, r.scenario, r.connections), []).append(r)
    chosen = []
    for group in groups.values():
        ordered = sorted(group, key=lambda r: r.rps)
        chosen.append(ordered[(len(ordered) - 1) // 2])
    return chosen


def markdown(
    results: list[Result], ratio_rows: list[dict[str, Any]], command: str, rounds: int
) -> str:
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; wrk on the same machine. "
        f"{rounds} round(s) of every scenario; each row is the scenario's median round.",
        "",
        f"Reproduce: `{command}`",
        "",
        "| database | scenario | conns | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | "
        "socket errors | 201s | stored | verified | server CPU µs/req | PostgreSQL CPU µs/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    every_round_verified = {
        key: all(r.verified for r in results if (r.database, r.scenario, r.connections) == key)
        for key in {(r.database, r.scenario, r.connections) for r in results}
    }
    for r in medians(results):
        verified = every_round_verified[(r.database, r.scenario, r.connections)]
        lines.append(
            f"| {r.database} | {r.scenario} | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.p999_ms:.1f} | {r.non_2xx_share:.2%} | {r.socket_errors} | "
            f"{r.created:,} | {r.stored:,} | {'yes' if verified else 'NO'} | "
            f"{r.server_cpu_us:.0f} | {r.postgres_cpu_us:.0f} |"
        )
    failed = [r for r in results if not r.verified]
    lines += [
        "",
        f"All {len(results)} runs (every round, warm-ups included): "
        f"{sum(r.socket_errors for r in results)} socket errors, "
        f"{sum(1 for r in results if r.non_2xx_share)} runs with non-2xx responses, "
        + (
            "inventory verified after every run."
            if not failed
            else f"inventory verification FAILED in {len(failed)} runs."
        ),
    ]
    columns = [(row["database"], row["connections"]) for row in ratio_rows]
    lines += [
        "",
        "Ratios, each taken within a round: median round (range over rounds).",
        "",
        "| ratio | target | " + " | ".join(f"{db} {conns}" for db, conns in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]

    def fmt(value: dict[str, Any] | None) -> str:
        if value is None:
            return "n/a"
        if value["min"] == value["max"]:
            return f"{value['median']:.2f}"
        return f"{value['median']:.2f} ({value['min']:.2f}–{value['max']:.2f})"

    for name in RATIOS:
        values = [row.get(name) for row in ratio_rows]
        if all(value is None for value in values):
            continue
        target = TARGETS.get(name)
        bar = "" if target is None else f"≥ {target:g}"
        lines.append(f"| {name} | {bar} | " + " | ".join(fmt(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    results = medians(results)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r.database, r.connections) for r in results})
    fig, axes = plt.subplots(2, len(groups), figsize=(5 * len(groups), 8), squeeze=False)
    for column, (database, connections) in enumerate(groups):
        chosen = [r for r in results if r.database == database and r.connections == connections]
        names = [r.scenario for r in chosen]
        axes[0][column].bar(names, [r.rps for r in chosen], color="#4c72b0")
        axes[0][column].set_title(f"{database}, {connections} connections")
        axes[0][column].set_ylabel("requests/s")
        axes[1][column].bar(names, [r.p99_ms for r in chosen], color="#dd8452")
        axes[1][column].set_ylabel("p99 latency (ms)")
        for axis in (axes[0][column], axes[1][column]):
            axis.tick_params(axis="x", rotation=40)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def update_doc(table: str) -> None:
    text = PERFORMANCE_DOC.read_text() if PERFORMANCE_DOC.exists() else ""
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    block = f"{begin}\n{table}{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text += "\n" + block + "\n"
    PERFORMANCE_DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per scenario")
    parser.add_argument("--rounds", type=int, default=3, help="times the scenario list runs")
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of load before each measured run"
    )
    parser.add_argument("--connections", default="64,256")
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument("--only", default="", help="comma-separated scenario labels")
    parser.add_argument(
        "--baseline",
        default="",
        metavar="DIR",
        help="also run a few scenarios on an older checkout (git worktree add DIR COMMIT)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting for every scenario, e.g. --set MAX_BATCH_SIZE=128",
    )
    args = parser.parse_args()
    for item in args.set:
        name, equals, value = item.partition("=")
        if not equals or not name:
            parser.error(f"--set wants NAME=VALUE, not {item!r}")
        EXTRA_ENV[name] = value
    connections = [int(c) for c in args.connections.split(",")]
    databases = [d.strip() for d in args.databases.split(",")]
    named = args.only.split(",") if args.only else []
    chosen = [s for s in SCENARIOS if not named or s.label in named]
    chosen += [s for s in OPT_IN_SCENARIOS if s.label in named]
    if args.baseline:
        global BASELINE
        BASELINE = Path(args.baseline).resolve()
        if not (BASELINE / "src" / "boxoffice").is_dir():
            parser.error(f"--baseline wants a checkout of this repository, not {args.baseline}")
        routes = BASELINE / "src" / "boxoffice" / "api" / "routes"
        has_checkout = (routes / "holds.py").exists()
        has_keys = (routes / "keys.py").exists()
        chosen += [
            s
            for s in BASELINE_SCENARIOS
            if (not named or s.label in named)
            and (s.app != "checkout" or has_checkout)
            and (not s.keyed or has_keys)
        ]
    wrk = ensure_wrk()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    workdir = Path(tempfile.mkdtemp(prefix="boxoffice-bench-"))
    workdir.chmod(0o755)
    postgres = ThrowawayPostgres().start() if "postgresql" in databases else None
    bouncer = None
    if postgres is not None and any(s.pooler == "pgbouncer" for s in chosen):
        ensure_pgbouncer()
        # As many server connections as one server process opens (DB_POOL_SIZE): what is
        # measured is the hop through pgbouncer, not a smaller pool.
        bouncer = ThrowawayPgbouncer(postgres, default_pool_size=20).start()
    runs = [
        (n, d, s, c)
        for n in range(1, args.rounds + 1)
        for d in databases
        for c in connections
        for s in chosen
        if d in s.databases
    ]
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("benchmark", total=len(runs))
            for n, kind, scenario, conns in runs:
                progress.update(task, description=f"round {n}: {kind}: {scenario.label} @ {conns}")
                result = run_one(
                    wrk,
                    kind,
                    scenario,
                    conns,
                    args.duration,
                    postgres,
                    workdir,
                    n,
                    args.warmup,
                    bouncer,
                )
                results.append(result)
                # Kept as it goes: a failure in the last round loses nothing measured.
                (RESULTS / "partial.json").write_text(
                    json.dumps([asdict(r) for r in results], indent=2)
                )
                progress.console.print(
                    f"r{n} {kind:10} {scenario.label:16} c={conns:<4} {result.rps:8,.0f} req/s  "
                    f"p99 {result.p99_ms:6.1f} ms  verified={result.verified}"
                )
                progress.advance(task)
    finally:
        if bouncer is not None:
            bouncer.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    command = (
        "make bench"
        if len(sys.argv) == 1
        else "make bench BENCH_ARGS='" + shlex.join(sys.argv[1:]).replace("'", '"') + "'"
    )
    ratio_rows = ratios(results)
    table = markdown(results, ratio_rows, command, args.rounds)
    # Only the full default run is the published figure; any other run is kept aside.
    # --baseline only adds scenarios: a full run with it is still the published figure.
    full = {**vars(args), "baseline": ""} == vars(parser.parse_args([]))
    stem = "latest" if full else "partial"
    (RESULTS / f"{stem}.json").write_text(
        json.dumps(
            {
                "results": [asdict(r) for r in results],
                "ratios": ratio_rows,
                "measured_at": datetime.now(UTC).isoformat(),
                "command": command,
            },
            indent=2,
        )
    )
    (RESULTS / f"{stem}.md").write_text(table)
    verified = all(r.verified for r in results)
    if full and verified:
        plot(results, RESULTS / "throughput.png")
        update_doc(table)
    elif full:
        console.print("A failed run is not published: docs and plot untouched.")
    else:
        console.print(f"A partial run: written to {RESULTS / 'partial.md'}, docs untouched.")
    console.print(table)
    if not verified:
        console.print("[red]Inventory verification FAILED[/red]")
        raise SystemExit(1)


if __name__ == "__main__":
    start = time.monotonic()
    main()
    console.print(f"done in {time.monotonic() - start:.0f} s")
