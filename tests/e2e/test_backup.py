"""`boxoffice backup` and `boxoffice restore` on both databases: a backup taken while a
real server books and holds for concurrent clients restores, into a fresh database, one
consistent moment of the sale; and every way a backup or restore can be refused is
refused with one clear line and exit 1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from boxoffice.config import Settings, async_database_url
from boxoffice.db.backup import BackupRefused, backup, backup_kind, pg_tool, restore
from boxoffice.db.database import Database, Limits
from boxoffice.db.migrate import downgrade, head_revision, upgrade
from boxoffice.db.tables import bookings, holds, sections
from tests.support.postgres import ThrowawayPostgres, free_port
from tests.support.server import ServerProcess, inventory_check

pytestmark = pytest.mark.e2e

CAPACITY = 100_000


def boxoffice(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boxoffice", *args],
        env={**os.environ, "DATABASE_URL": database_url, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def fresh_url(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> str:
    """An empty database of the same kind, never migrated: where a restore goes."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'restored.db'}"
    postgres: ThrowawayPostgres = request.getfixturevalue("postgres")
    return postgres.create_database(f"r_{uuid.uuid4().hex[:12]}")


@dataclass
class Answered:
    """When a request that the server acknowledged was sent and answered (monotonic)."""

    sent: float
    answered: float


@dataclass
class Ledger:
    """Everything the server acknowledged, with when."""

    bookings: dict[str, tuple[str, int, Answered]] = field(default_factory=dict)  # id: sec, qty
    holds: dict[str, Answered] = field(default_factory=dict)
    confirmed: dict[str, Answered] = field(default_factory=dict)  # hold id: the confirm
    released: dict[str, Answered] = field(default_factory=dict)  # hold id: the release
    failures: list[str] = field(default_factory=list)

    def changes(
        self, kept_bookings: set[str], kept_statuses: dict[str, str]
    ) -> list[tuple[Answered, bool]]:
        """Every acknowledged change, and whether a database with these bookings and
        holds (id: status) shows it."""
        found = [(when, id_ in kept_bookings) for id_, (_, _, when) in self.bookings.items()]
        found += [(when, id_ in kept_statuses) for id_, when in self.holds.items()]
        found += [(when, kept_statuses.get(h) == "confirmed") for h, when in self.confirmed.items()]
        found += [(when, kept_statuses.get(h) == "released") for h, when in self.released.items()]
        return found


def canonical(id_: object) -> str:
    """A UUID as the database gives it back and as the API wrote it, alike."""
    return str(uuid.UUID(str(id_)))


async def run_load(
    url: str, event: dict[str, Any], ledger: Ledger, stop: asyncio.Event, seed: int
) -> None:
    """Bookings, and holds then confirmed or released, until `stop`; every answer kept."""
    rng = random.Random(seed)
    section_ids = [canonical(s["id"]) for s in event["sections"]]
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            section = rng.choice(section_ids)
            sent = time.monotonic()
            try:
                if rng.random() < 0.5:
                    qty = rng.randint(1, 3)
                    body = {"eventId": event["id"], "sectionId": section, "qty": qty}
                    response = await client.post("/book", json=body)
                    if response.status_code != 201:
                        ledger.failures.append(response.text)
                        continue
                    when = Answered(sent, time.monotonic())
                    ledger.bookings[canonical(response.json()["id"])] = (section, qty, when)
                    continue
                items = [{"sectionId": section, "qty": rng.randint(1, 2)}]
                placed = await client.post("/holds", json={"eventId": event["id"], "items": items})
                if placed.status_code != 201:
                    ledger.failures.append(placed.text)
                    continue
                hold_id = canonical(placed.json()["id"])
                ledger.holds[hold_id] = Answered(sent, time.monotonic())
                sent = time.monotonic()
                if rng.random() < 0.6:
                    confirmed = await client.post(f"/holds/{hold_id}/confirm")
                    if confirmed.status_code != 201:
                        ledger.failures.append(confirmed.text)
                        continue
                    when = Answered(sent, time.monotonic())
                    ledger.confirmed[hold_id] = when
                    for booking in confirmed.json()["bookings"]:
                        booking_id = canonical(booking["id"])
                        ledger.bookings[booking_id] = (section, booking["qty"], when)
                elif rng.random() < 0.5:
                    released = await client.delete(f"/holds/{hold_id}")
                    if released.status_code != 204:
                        ledger.failures.append(released.text)
                        continue
                    ledger.released[hold_id] = Answered(sent, time.monotonic())
            except httpx.HTTPError as error:
                ledger.failures.append(repr(error))


async def stored(database_url: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(bookings, holds, sections) rows of a database, by id."""
    database = Database.from_url(async_database_url(database_url), limits=Limits(pool_size=4))
    try:
        async with database.engine.connect() as conn:
            found = []
            for table in (bookings, holds, sections):
                rows = (await conn.execute(select(table))).mappings().all()
                found.append({canonical(row["id"]): row for row in rows})
    finally:
        await database.dispose()
    return found[0], found[1], found[2]


async def test_a_backup_taken_under_load_restores_one_consistent_moment(
    database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    """A server books, holds, confirms and releases for 24 clients while the backup is
    taken. Restored into a fresh database, it is the sale as of one moment during the
    backup: every change acknowledged before that moment, none sent after it, and seats
    that add up."""
    backup_file = tmp_path / "sale.backup"
    ledger = Ledger()
    with ServerProcess(database_url, log_dir=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            sections_in = [{"name": f"S{i}", "price": 5, "capacity": CAPACITY} for i in range(3)]
            created = await client.post("/events", json={"name": "Sale", "sections": sections_in})
            assert created.status_code == 201, created.text
            event = created.json()
        stop = asyncio.Event()
        loops = [
            asyncio.create_task(run_load(server.url, event, ledger, stop, seed))
            for seed in range(24)
        ]
        try:
            while len(ledger.bookings) < 150 or len(ledger.holds) < 50:
                await asyncio.sleep(0.02)
                assert not any(loop.done() for loop in loops), "a client stopped"
            # In this process (a thread), so that `started` is close to the copy itself:
            # a command's start-up would give a checkpoint time to hide a WAL-less copy.
            started = time.monotonic()
            await asyncio.to_thread(backup, settings_for(database_url), backup_file)
            ended = time.monotonic()
            if database_url.startswith("sqlite"):
                # Restoring over the live file is refused while the server has it open.
                with pytest.raises(BackupRefused, match="open in another process"):
                    restore(settings_for(database_url), backup_file, force=True)
            bookings_then = len(ledger.bookings)
            while len(ledger.bookings) < bookings_then + 50:
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.gather(*loops)
    assert ledger.failures == [], ledger.failures[:5]

    restored = await asyncio.to_thread(boxoffice, fresh_url, "restore", str(backup_file))
    assert restored.returncode == 0, restored.stderr
    assert "boxoffice check" in restored.stderr
    check = await asyncio.to_thread(inventory_check, fresh_url)
    assert check.returncode == 0, check.stdout + check.stderr

    kept, kept_holds, kept_sections = await stored(fresh_url)
    assert set(kept) <= set(ledger.bookings), "a booking no client was answered"
    assert set(kept_holds) <= set(ledger.holds), "a hold no client was answered"
    assert {row["status"] for row in kept_holds.values()} <= {"active", "confirmed", "released"}
    statuses = {hold_id: row["status"] for hold_id, row in kept_holds.items()}
    changes = ledger.changes(set(kept), statuses)
    # The backup shows the sale at one moment T, after `started` and after every change
    # it holds was sent: whatever was acknowledged before T is in it...
    moment = max([started, *(when.sent for when, there in changes if there)])
    missing = [when for when, there in changes if when.answered < moment and not there]
    assert missing == [], f"{len(missing)} changes acknowledged before the backup are missing"
    # ...and T came before the backup ended, while the load was still running.
    assert all(when.sent < ended for when, there in changes if there)
    assert not all(there for _, there in changes), "the backup was taken after the load"
    overlapping = [when for when, _ in changes if when.sent < ended and when.answered > started]
    assert overlapping, "no request was in flight while the backup was taken"
    # The seats add up, and every sold one is an acknowledged booking's.
    sold: dict[str, int] = defaultdict(int)
    for booking_id, row in kept.items():
        section_id, qty, _ = ledger.bookings[booking_id]
        assert (row["qty"], str(row["section_id"])) == (qty, section_id)
        sold[section_id] += qty
    assert len(kept_sections) == 3
    for section_id, row in kept_sections.items():
        assert row["remaining"] + row["held"] + row["sold"] == row["capacity"] == CAPACITY
        assert row["sold"] == sold[section_id]


async def test_an_older_schema_backup_restores_and_upgrades(
    client: httpx.AsyncClient, database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    section = {"name": "GA", "price": 5, "capacity": 10}
    event = (await client.post("/events", json={"name": "Old", "sections": [section]})).json()
    section_id = event["sections"][0]["id"]
    book = {"eventId": event["id"], "sectionId": section_id, "qty": 3}
    assert (await client.post("/book", json=book)).status_code == 201
    hold = {"eventId": event["id"], "items": [{"sectionId": section_id, "qty": 2}]}
    assert (await client.post("/holds", json=hold)).status_code == 201
    await asyncio.to_thread(downgrade, database_url, "0004_hold_caps")
    backup_file = tmp_path / "old.backup"
    made = await asyncio.to_thread(boxoffice, database_url, "backup", str(backup_file))
    assert made.returncode == 0, made.stderr
    assert "database (schema 0004_hold_caps) to" in made.stderr

    restored = await asyncio.to_thread(boxoffice, fresh_url, "restore", str(backup_file))
    assert restored.returncode == 0, restored.stderr
    assert "(schema 0004_hold_caps)" in restored.stderr
    assert f"needs schema {head_revision()}: run `boxoffice db upgrade`" in restored.stderr
    await asyncio.to_thread(upgrade, fresh_url)
    check = await asyncio.to_thread(inventory_check, fresh_url)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 sections, 1 holds" in check.stdout
    kept, _, kept_sections = await stored(fresh_url)
    assert [row["qty"] for row in kept.values()] == [3]
    assert [(r["remaining"], r["held"], r["sold"]) for r in kept_sections.values()] == [(5, 2, 3)]


def test_a_backup_from_a_newer_version_is_restored_with_a_warning(tmp_path: Path) -> None:
    backup_file = tmp_path / "newer.backup"
    with contextlib.closing(sqlite3.connect(backup_file)) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        connection.execute("INSERT INTO alembic_version VALUES ('0042_from_the_future')")
        connection.commit()
    run = boxoffice(f"sqlite:///{tmp_path / 'restored.db'}", "restore", str(backup_file))
    assert run.returncode == 0, run.stderr
    assert "0042_from_the_future is unknown to this version" in run.stderr
    assert "db upgrade" not in run.stderr


def settings_for(database_url: str) -> Settings:
    return Settings(database_url=database_url, _env_file=None)  # type: ignore[call-arg]


def test_backup_refuses_an_existing_file_unless_forced(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    target = folder / "precious"
    target.write_bytes(b"yesterday's backup")
    refused = boxoffice(database_url, "backup", str(target))
    assert refused.returncode == 1
    assert "exists already: pass --force" in refused.stderr
    assert target.read_bytes() == b"yesterday's backup"
    backup(settings_for(database_url), target, force=True)
    assert backup_kind(target) == ("sqlite" if "sqlite" in database_url else "postgresql")
    assert [p.name for p in folder.iterdir()] == ["precious"], "a temporary file is left"


def test_restore_refuses_what_is_not_a_backup_of_this_database_kind(
    database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    sqlite_file = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(sqlite_file)) as connection:
        connection.execute("CREATE TABLE t (x)")
    pg_file = tmp_path / "other.dump"
    pg_file.write_bytes(b"PGDMP\x01\x0e\x00" + bytes(100))
    other, same = (pg_file, sqlite_file) if "sqlite" in database_url else (sqlite_file, pg_file)
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a backup\n")
    cases = {
        tmp_path / "missing": "no backup at",
        garbage: "is not a Boxoffice backup",
        other: "backup, but DATABASE_URL names a",
        same: "not a readable pg_dump archive" if same == pg_file else "holds no Boxoffice schema",
    }
    for path, message in cases.items():
        with pytest.raises(BackupRefused, match=message):
            restore(settings_for(fresh_url), path)
    assert is_empty(fresh_url), "a refused restore left something behind"
    run = boxoffice(fresh_url, "restore", str(other))
    assert run.returncode == 1
    assert "backup, but DATABASE_URL names a" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_damaged_backup_is_refused_and_the_target_is_left_as_it_was(
    database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    backup_file = tmp_path / "whole.backup"
    backup(settings_for(database_url), backup_file)
    whole = backup_file.read_bytes()
    truncated = tmp_path / "truncated.backup"
    truncated.write_bytes(whole[: len(whole) // 2])
    # Its table of contents whole, its last table's data not: pg_restore fails half-way.
    scrambled = tmp_path / "scrambled.backup"
    scrambled.write_bytes(whole[:-60] + bytes(b ^ 0x5A for b in whole[-60:-10]) + whole[-10:])
    for damaged in (truncated, scrambled) if "postgresql" in database_url else (truncated,):
        with pytest.raises(BackupRefused):
            restore(settings_for(fresh_url), damaged)
        assert is_empty(fresh_url), f"{damaged.name} was half restored"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "a temporary file"
    restore(settings_for(fresh_url), backup_file)  # the same database takes the whole one
    assert not is_empty(fresh_url)


def test_restore_never_overwrites_a_database_unasked(database_url: str, tmp_path: Path) -> None:
    """The configured database holds data: SQLite replaces it only with --force (no
    server running); PostgreSQL restores into an empty database only."""
    settings = settings_for(database_url)
    backup_file = tmp_path / "b.backup"
    backup(settings, backup_file)
    if database_url.startswith("sqlite"):
        with pytest.raises(BackupRefused, match="exists already: pass --force"):
            restore(settings, backup_file)
        live = Path(database_url.removeprefix("sqlite:///"))
        wal = Path(f"{live}-wal")
        # A WAL left by a server that died: pages of this database, not of the backup.
        connection = sqlite3.connect(live, isolation_level=None)
        connection.execute("CREATE TABLE newer (x)")
        stale = wal.read_bytes()
        connection.close()
        wal.write_bytes(stale)
        restore(settings, backup_file, force=True)
        assert not Path(f"{live}-wal").exists()
        with contextlib.closing(sqlite3.connect(live)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert "newer" not in tables
        assert "bookings" in tables
    else:
        with pytest.raises(BackupRefused, match="is not empty"):
            restore(settings, backup_file)
        with pytest.raises(BackupRefused, match="restore into an empty database"):
            restore(settings, backup_file, force=True)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_dump_of_another_postgresql_database_is_refused_before_restoring_anything(
    request: pytest.FixtureRequest, database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    postgres: ThrowawayPostgres = request.getfixturevalue("postgres")
    name = f"f_{uuid.uuid4().hex[:12]}"
    foreign_url = postgres.create_database(name)
    postgres.psql("CREATE TABLE invoices (id int PRIMARY KEY)", database=name)
    foreign = tmp_path / "foreign.dump"
    subprocess.run(
        [str(pg_tool("pg_dump")), f"--dbname={foreign_url}", "-Fc", f"--file={foreign}"],
        check=True,
    )
    with pytest.raises(BackupRefused, match="holds no Boxoffice schema"):
        restore(settings_for(fresh_url), foreign)
    assert is_empty(fresh_url)


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://app:hunter2-secret@127.0.0.1:{free_port()}/x"
    run = boxoffice(url, "backup", str(tmp_path / "b"))
    assert run.returncode == 1
    assert "cannot reach the postgresql database" in run.stderr
    assert "hunter2-secret" not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []


def is_empty(database_url: str) -> bool:
    """True when the database holds no table: a missing SQLite file, or no relation."""
    if database_url.startswith("sqlite"):
        return not Path(database_url.removeprefix("sqlite:///")).exists()

    async def tables() -> int:
        database = Database.from_url(async_database_url(database_url), limits=Limits(pool_size=4))
        try:
            async with database.engine.connect() as conn:
                query = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                return int((await conn.execute(text(query))).scalar_one())
        finally:
            await database.dispose()

    return asyncio.run(tables()) == 0
