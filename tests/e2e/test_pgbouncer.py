"""Through a real pgbouncer in transaction mode, whose few server sessions every client
shares in turn: with `DB_POOLER=transaction` the service sells out without a 5xx and its
inventory checks out; without it, the same load fails (pgbouncer 1.18 refuses the session
settings as startup parameters, and once told to ignore them, named prepared statements
clash). Each transaction gets the session settings, and a server session keeps neither
them nor any prepared statement for the next client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from boxoffice.config import async_database_url
from boxoffice.db.database import Database, Limits
from boxoffice.db.driver import DriverStatement
from boxoffice.services.unit_of_work import UnitOfWork
from tests.support.pgbouncer import ThrowawayPgbouncer, pgbouncer_version
from tests.support.postgres import ThrowawayPostgres
from tests.support.server import ServerProcess, inventory_check

pytestmark = pytest.mark.e2e

# Fewer server sessions than one server process opens connections (DB_POOL_SIZE, 20):
# clients really take turns on them.
SERVER_SESSIONS = 3
POOLER = {"DB_POOLER": "transaction"}
# Two workers start in seconds; on these shared cores, under a busy suite, in up to a minute.
STARTUP_SECONDS = 120
CAPACITY = 60  # per section, of two: the sale's clients want more than that
# What the service would send as startup parameters without DB_POOLER (db/database.py).
SESSION_PARAMETERS = (
    "statement_timeout,lock_timeout,idle_in_transaction_session_timeout,"
    "enable_hashjoin,enable_mergejoin"
)


@pytest.fixture
def database_name(postgres: ThrowawayPostgres, postgres_template: str) -> str:
    """A freshly migrated database on the shared cluster (reached through pgbouncer)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    return name


@pytest.fixture
def bouncer(postgres: ThrowawayPostgres) -> Iterator[ThrowawayPgbouncer]:
    own = ThrowawayPgbouncer(postgres, default_pool_size=SERVER_SESSIONS).start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def lone_bouncer(postgres: ThrowawayPostgres) -> Iterator[ThrowawayPgbouncer]:
    """One server session for every client: what a transaction leaves on it, the next
    client gets; and one transaction elsewhere can take it all."""
    own = ThrowawayPgbouncer(postgres, default_pool_size=1).start()
    try:
        yield own
    finally:
        own.stop()


@dataclass
class Load:
    """What a sale's clients were told, by kind of request."""

    answers: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    seats_sold: int = 0  # acknowledged: booked (201) or confirmed (201)
    failures: list[str] = field(default_factory=list)  # 5xx bodies and dropped connections
    event: httpx.Response | None = None  # GET /events/{id} once every client is done


async def sell(url: str, capacity: int, *, clients: int = 16, rounds: int = 12) -> Load:
    """Bookings, holds then confirms, and holds then releases, concurrently, past sell-out."""
    load = Load()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        made = await http.post(
            "/events",
            json={
                "name": "Pooled",
                "sections": [
                    {"name": name, "price": 5, "capacity": capacity} for name in ("A", "B")
                ],
            },
        )
        assert made.status_code == 201, made.text
        event = made.json()
        sections = [s["id"] for s in event["sections"]]

        def note(kind: str, answer: httpx.Response) -> None:
            body = answer.json() if answer.content else {}
            code = body.get("code", "") if isinstance(body, dict) else ""
            load.answers[(kind, answer.status_code, code)] += 1
            if answer.status_code >= 500:
                load.failures.append(f"{kind}: {answer.status_code} {answer.text[:300]}")

        async def client(number: int) -> None:
            for turn in range(rounds):
                section = sections[(number + turn) % 2]
                qty = 1 + (number + turn) % 2
                try:
                    if turn % 3 == 0:
                        booked = await http.post(
                            "/book", json={"eventId": event["id"], "sectionId": section, "qty": qty}
                        )
                        note("book", booked)
                        load.seats_sold += qty if booked.status_code == 201 else 0
                        continue
                    held = await http.post(
                        "/holds",
                        json={
                            "eventId": event["id"],
                            "customerId": f"c{number}-{turn}",
                            "items": [{"sectionId": section, "qty": qty}],
                        },
                    )
                    note("hold", held)
                    if held.status_code != 201:
                        continue
                    hold = held.json()["id"]
                    if turn % 3 == 1:
                        confirmed = await http.post(
                            f"/holds/{hold}/confirm", json={"paymentReference": f"pay-{hold}"}
                        )
                        note("confirm", confirmed)
                        load.seats_sold += qty if confirmed.status_code == 201 else 0
                    else:
                        note("release", await http.delete(f"/holds/{hold}"))
                except httpx.HTTPError as error:
                    load.failures.append(f"{type(error).__name__}: {error}")

        await asyncio.gather(*(client(n) for n in range(clients)))
        load.event = await http.get(f"/events/{event['id']}")
    return load


def upgrade_through_pgbouncer(url: str) -> None:
    """`boxoffice db upgrade` as an operator runs it, through pgbouncer."""
    migrated = subprocess.run(
        [sys.executable, "-m", "boxoffice", "db", "upgrade"],
        env={**os.environ, "DATABASE_URL": url, **POOLER},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr


async def test_a_sale_through_pgbouncer_in_transaction_mode_with_db_pooler(
    postgres: ThrowawayPostgres, bouncer: ThrowawayPgbouncer, tmp_path: Path
) -> None:
    database_name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.create_database(database_name)
    url = bouncer.url(database_name)
    upgrade_through_pgbouncer(url)
    server = ServerProcess(url, workers=2, env=POOLER, log_dir=tmp_path)
    try:
        server.start(timeout=STARTUP_SECONDS)
        load = await sell(server.url, capacity=CAPACITY)
        # The two workers' pooled connections are pgbouncer's clients, taking turns on
        # its few server sessions.
        clients = bouncer.admin("SHOW CLIENTS").count(f"|{database_name}|")
        servers = bouncer.admin("SHOW SERVERS").count(f"|{database_name}|")
    finally:
        server.stop()
    assert not load.failures, load.failures[:5]
    assert load.event is not None
    assert load.event.status_code == 200, load.event.text
    shown = load.event.json()["sections"]
    remaining, held, sold = (sum(s[n] for s in shown) for n in ("remaining", "held", "sold"))
    assert remaining + held + sold == 2 * CAPACITY
    assert min(remaining, held, sold) >= 0, shown
    assert sold == load.seats_sold, f"sold {sold}, acknowledged {load.seats_sold}: {shown}"
    expected = {
        ("book", 201, ""),
        ("book", 400, "insufficient_seats"),
        ("hold", 201, ""),
        ("hold", 400, "insufficient_seats"),
        ("confirm", 201, ""),
        ("release", 204, ""),
    }
    assert set(load.answers) <= expected, load.answers
    assert load.answers[("book", 400, "insufficient_seats")], "never sold out"
    assert load.answers[("confirm", 201, "")]
    assert load.answers[("release", 204, "")]
    assert servers <= SERVER_SESSIONS < clients, (servers, clients)
    check = inventory_check(url, env=POOLER)
    assert check.returncode == 0, check.stdout + check.stderr


async def test_without_db_pooler_the_same_sale_fails_through_pgbouncer(
    postgres: ThrowawayPostgres, bouncer: ThrowawayPgbouncer, database_name: str, tmp_path: Path
) -> None:
    # As pgbouncer comes: the session settings are startup parameters it refuses.
    with pytest.raises(RuntimeError, match=r"unsupported startup\s+parameter"):
        ServerProcess(bouncer.url(database_name), workers=2, log_dir=tmp_path).start(
            timeout=STARTUP_SECONDS
        )

    # Told to ignore them (so they reach no server session), and keeping no prepared
    # statement across transactions (1.18 cannot; 1.21 and later can, when told to).
    conf = {"ignore_startup_parameters": SESSION_PARAMETERS}
    if pgbouncer_version() >= (1, 21):
        conf["max_prepared_statements"] = "0"
    lenient = ThrowawayPgbouncer(postgres, default_pool_size=SERVER_SESSIONS, extra_conf=conf)
    server = ServerProcess(lenient.url(database_name), workers=2, log_dir=tmp_path)
    try:
        lenient.start()
        try:
            server.start(timeout=STARTUP_SECONDS)
        except RuntimeError as refused:  # the first clash came while starting up
            failure = str(refused)
        else:
            load = await sell(server.url, capacity=CAPACITY)
            assert load.failures, "the sale went through without DB_POOLER"
            failure = server.log()
    finally:
        server.stop()
        lenient.stop()
    failure = " ".join(failure.split())  # the CLI wraps its lines
    assert "prepared statement" in failure, failure[-2000:]
    assert "already exists" in failure or "does not exist" in failure, failure[-2000:]


async def test_each_transaction_gets_the_settings_and_the_session_keeps_none(
    lone_bouncer: ThrowawayPgbouncer, database_name: str
) -> None:
    """Every transaction, and the committer's lone statement, runs under the session
    settings; the one server session keeps neither them nor a prepared statement."""
    bouncer = lone_bouncer
    limits = Limits(pool_size=6, statement_timeout=7.0, lock_timeout=3.0)
    url = async_database_url(bouncer.url(database_name))
    database = Database.from_url(url, limits=limits, pooler="transaction")
    shown = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
    shown += "current_setting('idle_in_transaction_session_timeout'), "
    shown += "current_setting('enable_hashjoin'), current_setting('application_name')"
    try:
        for write in (False, True):
            for _ in range(3):  # a statement prepared (and described) before is run again
                async with UnitOfWork(database, write=write) as uow:
                    row = tuple((await uow.conn.execute(text(shown))).one())
                    count = await uow.conn.execute(text("SELECT count(*) FROM sections"))
                    assert count.scalar_one() == 0
                    await uow.commit()
                planning = "off" if write else "on"
                assert row == ("7s", "3s", "1min", planning, "boxoffice")
        # The committer's one-statement write: no explicit transaction of the caller's.
        conn = await database.connect(write=True)
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            lone = DriverStatement(text(shown))
            for _ in range(2):
                (row,) = await lone.fetch(conn, {})
                assert tuple(row) == ("7s", "3s", "1min", "off", "boxoffice")
        finally:
            await conn.close()
    finally:
        await database.dispose()
    plain = await asyncpg.connect(bouncer.url(database_name), statement_cache_size=0)
    try:
        left: Any = await plain.fetchrow(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
            "current_setting('enable_hashjoin'), (SELECT count(*) FROM pg_prepared_statements)"
        )
    finally:
        await plain.close()
    assert tuple(left) == ("0", "0", "on", 0), "a setting or a prepared statement stayed behind"


async def test_with_every_server_session_taken_requests_get_503_and_then_go_through(
    lone_bouncer: ThrowawayPgbouncer, database_name: str, tmp_path: Path
) -> None:
    """pgbouncer queues a transaction while its pool is exhausted; the driver's deadline
    (DB_STATEMENT_TIMEOUT_SECONDS + 2 s) still ends the wait: a 503 with Retry-After, not a
    hang, and bookings resume by themselves once a session is free."""
    bouncer = lone_bouncer
    env = {**POOLER, "DB_STATEMENT_TIMEOUT_SECONDS": "1"}
    server = ServerProcess(bouncer.url(database_name), env=env, log_dir=tmp_path)
    hog = None
    try:
        server.start(timeout=STARTUP_SECONDS)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            made = await http.post(
                "/events",
                json={"name": "Busy", "sections": [{"name": "A", "price": 5, "capacity": 5}]},
            )
            assert made.status_code == 201, made.text
            body = {"eventId": made.json()["id"], "sectionId": made.json()["sections"][0]["id"]}
            body["qty"] = 1
            # Another client's open transaction holds the one server session.
            hog = await asyncpg.connect(bouncer.url(database_name), statement_cache_size=0)
            held = hog.transaction()
            await held.start()
            await hog.execute("SELECT 1")
            refused = await http.post("/book", json=body)
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["code"] == "service_unavailable"
            assert (await http.get("/readyz")).status_code == 503
            await held.rollback()
            for _ in range(20):  # a client honouring Retry-After
                booked = await http.post("/book", json=body)
                if booked.status_code != 503:
                    break
                await asyncio.sleep(1)
            assert booked.status_code == 201, booked.text
            shown = (await http.get(f"/events/{body['eventId']}")).json()["sections"][0]
        assert (shown["remaining"], shown["sold"]) == (4, 1), "the refused booking was written"
    finally:
        if hog is not None:
            await hog.close()
        server.stop()
