"""The metrics' looks at the database, on SQLite and PostgreSQL: the watched sections' seats
at every sample, their check against holds and bookings at most once per check interval,
and a different database server answering counted as one change."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from boxoffice.booking import BatchedBooker
from boxoffice.db.database import Database
from boxoffice.domain.commands import Book
from boxoffice.domain.model import EventSpec, SectionSpec
from boxoffice.observability import exporter as exporter_module
from boxoffice.observability import metrics
from boxoffice.observability.exporter import Exporter
from boxoffice.services.clock import FakeClock
from boxoffice.services.events import create_event
from boxoffice.services.inventory_check import watch_newest_sections

SPEC = EventSpec("Gig", (SectionSpec("Floor", 1000, 10), SectionSpec("Balcony", 500, 4)))


def exported(name: str) -> float:
    metrics.flush()
    return REGISTRY.get_sample_value(name) or 0.0


async def test_it_looks_at_every_sample_and_checks_once_per_interval(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    older = await create_event(database, SPEC, clock())
    newer = await create_event(database, SPEC, clock.advance(1))
    booker = BatchedBooker(database, max_tickets_per_booking=10, clock=clock)
    await booker.start()
    try:
        await booker.submit(Book(newer.id, newer.sections[1].id, 3))
    finally:
        await booker.stop()
    looks: list[bool] = []

    async def watch(database: Database, max_sections: int, *, check: bool) -> Any:
        looks.append(check)
        return await watch_newest_sections(database, max_sections, check=check)

    monkeypatch.setattr(exporter_module, "watch_newest_sections", watch)
    exporter = Exporter(
        database, sample_seconds=5, check_seconds=60, inventory_sections=2, clock=clock
    )
    await exporter.sample()
    await exporter.sample()
    clock.advance(59)
    await exporter.sample()
    clock.advance(1)
    await exporter.sample()
    assert looks == [True, False, False, True]

    # The newest event's two sections, as they are: nothing of the older one.
    checked = await watch_newest_sections(database, 2, check=True)
    assert checked.violations == []
    assert [(s.event_id, s.name, s.row.remaining, s.row.sold) for s in checked.sections] == [
        (newer.id, "Floor", 10, 0),
        (newer.id, "Balcony", 1, 3),
    ]
    assert older.id not in {s.event_id for s in checked.sections}
    looked = await watch_newest_sections(database, 1, check=False)
    assert looked.violations is None
    assert [s.name for s in looked.sections] == ["Floor"]


async def test_a_different_server_answering_is_counted_once(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await database.identify_server()
    assert await database.identify_server() == first  # the same server, the same answer
    if database.dialect == "postgresql":
        assert first.split()[1].isdigit()  # address (or None on a socket), port, start time
    exporter = Exporter(database, sample_seconds=5, check_seconds=0, inventory_sections=0)
    before = exported("boxoffice_database_server_changes_total")
    await exporter.probe()
    await exporter.probe()
    assert exported("boxoffice_database_server_changes_total") == before

    async def promoted() -> str:  # what a failover looks like from here
        return first + " (the standby, promoted)"

    monkeypatch.setattr(database, "identify_server", promoted)
    await exporter.probe()
    await exporter.probe()
    assert exported("boxoffice_database_server_changes_total") == before + 1
    assert exported("boxoffice_database_up") == 1
