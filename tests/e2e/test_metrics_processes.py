"""GET /metrics on a real two-worker server, on both databases: whichever worker answers
the scrape reports the sum of both workers' counts; a worker killed and replaced keeps its
counts in the sum and drops out of the live gauges; an earlier run's files do not count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from boxoffice.db.database import Limits
from tests.support.keys import first_admin_key
from tests.support.server import ServerProcess, committer_processes

pytestmark = pytest.mark.e2e

BOOKINGS = 40
POOL_SIZE = 6
DEADLINE_SECONDS = 30.0

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, admin: dict[str, str]) -> Series:
    """One scrape, on a connection of its own (so any worker may answer it)."""
    answer = httpx.get(f"{url}/metrics", headers=admin, timeout=10)
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def bookings_total(series: Series) -> float:
    return series.get(("boxoffice_bookings_total", frozenset()), 0.0)


def pool_size(series: Series) -> float:
    name = "boxoffice_database_pool_size_connections"
    return sum(value for (found, _), value in series.items() if found == name)


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_SECONDS:g} s: {what}")
        time.sleep(0.2)


def counted_by_worker(directory: Path) -> dict[int, float]:
    """Each process's own bookings count, from its file in the shared folder."""
    found = {}
    for path in directory.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for sample in family.samples:
                if sample.name == "boxoffice_bookings_total":
                    found[int(path.stem.split("_")[1])] = sample.value
    return found


def earlier_run(directory: Path) -> None:
    """What a server that ran before left in the folder: 1000 bookings."""
    code = "from boxoffice.observability import metrics\n"
    code += "metrics.BOOKINGS.inc((), 1000)\nmetrics.flush()\n"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_two_workers_report_the_sum_whoever_answers(database_url: str, tmp_path: Path) -> None:
    two_workers_report_the_sum(database_url, tmp_path, committer="worker")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_shared_committer_process_counts_for_the_workers(
    database_url: str, tmp_path: Path
) -> None:
    two_workers_report_the_sum(database_url, tmp_path, committer="process")


def two_workers_report_the_sum(database_url: str, tmp_path: Path, *, committer: str) -> None:
    """Bookings through two workers, counted once (by the committer process with
    BOOKING_COMMITTER=process), whichever worker answers the scrape."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    earlier_run(directory)
    admin = {"Authorization": f"Bearer {first_admin_key(database_url)}"}
    env = {
        "BOXOFFICE_OPEN_ACCESS": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DB_POOL_SIZE": str(POOL_SIZE),
        "BOOKING_COMMITTER": committer,
    }
    limits = Limits(pool_size=POOL_SIZE)
    # Connections each process may open, in all its pools (SQLite: one is the writer's).
    per_process = POOL_SIZE - 1 if database_url.startswith("sqlite") else sum(limits.split())
    with ServerProcess(database_url, workers=2, env=env, log_dir=tmp_path) as server:
        made = httpx.post(
            f"{server.url}/events",
            json={"name": "Gig", "sections": [{"name": "GA", "price": 5, "capacity": 1000}]},
            headers=admin,
            timeout=10,
        )
        assert made.status_code == 201, made.text
        event = made.json()
        body = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 1}

        def book(_: int) -> int:
            # A connection each, from several threads at once: both workers take some.
            return httpx.post(
                f"{server.url}/book", json=body, headers=admin, timeout=30
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(book, range(BOOKINGS)))
        assert statuses == [201] * BOOKINGS

        # Every worker flushes within a second; then every scrape says the same.
        until(lambda: bookings_total(scrape(server.url, admin)) == BOOKINGS, "the sum")
        for _ in range(6):
            series = scrape(server.url, admin)
            assert bookings_total(series) == BOOKINGS
            assert series[("boxoffice_tickets_sold_total", frozenset())] == BOOKINGS
            assert pool_size(series) == 2 * per_process
        by_worker = counted_by_worker(directory)
        assert sum(by_worker.values()) == BOOKINGS
        counting = [pid for pid, count in by_worker.items() if count]
        assert server.process is not None
        committers = committer_processes(server.process.pid)
        if committer == "process":  # the workers' shared committer counts
            assert len(committers) == 1, committers
            assert counting == committers, (by_worker, committers)
        else:
            assert len(counting) == 2, by_worker
            assert not committers

        # A worker killed: uvicorn starts another; the dead one's counts stay, its live
        # gauges go (else the pools would add up to three processes' worth).
        victim = next(pid for pid in by_worker if pid not in committers)
        os.kill(victim, signal.SIGKILL)
        until(
            lambda: (
                len(counted_by_worker(directory)) == len(by_worker) + 1
                and pool_size(scrape(server.url, admin)) == 2 * per_process
            ),
            "a new worker, and the pools of two",
        )
        for _ in range(6):
            series = scrape(server.url, admin)
            assert bookings_total(series) == BOOKINGS
            assert pool_size(series) == 2 * per_process
