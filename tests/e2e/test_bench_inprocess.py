"""The benchmark's drivers keep working: a small run of each mode of the
instruction-counting driver (`bench/inprocess.py`), the way docs/performance.md runs it
under callgrind, of `bench/repeat.py`, and of `bench/polls.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import ThrowawayPostgres

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]


def _count(what: str, *options: str) -> None:
    """A small run of the driver, every request answered 201 (it exits otherwise)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", what, "--requests", "64", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "answered" not in done.stderr


@pytest.mark.parametrize("what", ["book", "checkout", "noop"])
@pytest.mark.parametrize("keyed", [False, True], ids=["open", "keyed"])
def test_the_driver_runs_every_request_to_a_201(what: str, keyed: bool) -> None:
    _count(what, *(["--keyed"] if keyed else []))


@pytest.mark.parametrize("what", ["book", "checkout"])
def test_the_driver_runs_against_postgresql(what: str, postgres: ThrowawayPostgres) -> None:
    _count(what, "--database-url", postgres.create_database(f"count_{what}"))
    # The bookings went to PostgreSQL, not to a SQLite file of the driver's own.
    assert int(postgres.psql("SELECT count(*) FROM bookings", database=f"count_{what}")) >= 64


SHORT = ["--duration", "1", "--warmup", "0"]


def test_the_repeat_driver_runs_one_scenario_and_reads_its_batches() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.repeat", "--runs", "1", "--database", "sqlite", *SHORT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = done.stdout.strip().splitlines()[-1].strip("|").split("|")
    assert row[0].strip() == "1"
    assert int(row[4].replace(",", "")) > 0  # batches, from the server's own log


def test_the_poll_benchmark_runs_both_ways_with_every_poll_answered(tmp_path: Path) -> None:
    """`make polls` in small: both ways measured, every poll a 200 (it exits otherwise)."""
    report = tmp_path / "polls.md"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.polls", "--customers", "2400", "--rounds", "1"),
            *("--duration", "2", "--connections", "16", "--output", str(report)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line for line in report.read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| protocol", "| app"]
