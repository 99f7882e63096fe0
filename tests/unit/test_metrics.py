"""Local metrics and their flush: counted in plain dicts, added to prometheus-client's
metrics once, correctly, in one process and across several (its multiprocess mode)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from boxoffice.observability import multiprocess
from boxoffice.observability.metrics import LocalCounter, LocalGauge, LocalHistogram

BOUNDS = (0.01, 0.1, 1.0)
READERS = frozenset({("pool", "readers")})
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(registry: CollectorRegistry, name: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith(name) and not sample.name.endswith("_created")
    }


def test_a_counter_adds_what_was_counted_since_the_last_flush_once() -> None:
    registry = CollectorRegistry()
    counter = LocalCounter("t_things", "Things.", ["kind"], registry=registry, flushed=None)
    plain = LocalCounter("t_plain", "Plain.", registry=registry, flushed=None)
    counter.inc(("a",))
    counter.inc(("a",), 2)
    counter.inc(("b",))
    assert registry.get_sample_value("t_things_total", {"kind": "a"}) is None  # not yet
    counter.flush()
    plain.flush()
    assert registry.get_sample_value("t_things_total", {"kind": "a"}) == 3
    assert registry.get_sample_value("t_things_total", {"kind": "b"}) == 1
    assert registry.get_sample_value("t_plain_total") == 0  # exported from the first flush
    counter.inc(("a",))
    counter.flush()
    counter.flush()  # nothing new: nothing added
    assert registry.get_sample_value("t_things_total", {"kind": "a"}) == 4
    assert registry.get_sample_value("t_things_total", {"kind": "b"}) == 1


def test_a_histogram_flushes_what_prometheus_would_have_observed() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    local = LocalHistogram(
        "t_seconds", "Seconds.", ["route"], buckets=BOUNDS, registry=ours, flushed=None
    )
    reference = Histogram("t_seconds", "Seconds.", ["route"], buckets=BOUNDS, registry=theirs)
    # On the bounds themselves (`le` includes them), between them, past the last, zero.
    values = [0.0, 0.005, 0.01, 0.0100001, 0.1, 0.5, 1.0, 1.5, 30.0]
    for index, value in enumerate(values):
        route = "/a" if index % 3 else "/b"
        local.observe(value, (route,))
        reference.labels(route).observe(value)
        if index == 4:
            local.flush()  # twice, mid-way: the second adds only what came after
    local.flush()
    assert samples(ours, "t_seconds") == samples(theirs, "t_seconds")
    assert ours.get_sample_value("t_seconds_count", {"route": "/a"}) == 6


def test_a_gauge_is_exported_only_once_set_and_keeps_the_last_value() -> None:
    registry = CollectorRegistry()
    gauge = LocalGauge("t_up", "Up.", mode="livemin", registry=registry, flushed=None)
    gauge.flush()
    assert registry.get_sample_value("t_up") is None  # a 0 would read as "down"
    gauge.set(1)
    gauge.set(0)
    gauge.flush()
    assert registry.get_sample_value("t_up") == 0
    gauge.flush()
    assert registry.get_sample_value("t_up") == 0


WORKER = """
import os, sys
from boxoffice.observability import metrics
metrics.BOOKINGS.inc((), int(sys.argv[1]))
metrics.HTTP_REQUESTS.observe(0.003, ("/book", "POST", 201))
metrics.POOL_SIZE.set(5, ("readers",))
metrics.DATABASE_UP.set(int(sys.argv[2]))
metrics.flush()
print(os.getpid())
"""
SCRAPE = """
import sys
from boxoffice.observability.multiprocess import render
sys.stdout.write(render().decode())
"""


def run_python(code: str, directory: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, multiprocess.ENV: str(directory)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def scrape(directory: Path) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(run_python(SCRAPE, directory))
        for sample in family.samples
    }


def test_several_processes_add_up_and_a_dead_ones_live_gauges_drop_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = int(run_python(WORKER, tmp_path, "3", "1"))
    down = int(run_python(WORKER, tmp_path, "4", "0"))
    found = scrape(tmp_path)
    assert found[("boxoffice_bookings_total", frozenset())] == 7
    request = frozenset({("route", "/book"), ("method", "POST"), ("status", "201")})
    assert found[("boxoffice_http_request_duration_seconds_count", request)] == 2
    assert found[("boxoffice_database_pool_size_connections", READERS)] == 10
    assert found[("boxoffice_database_up", frozenset())] == 0  # the lowest of the two

    monkeypatch.setenv(multiprocess.ENV, str(tmp_path))
    multiprocess.forget_process(down)
    found = scrape(tmp_path)
    assert found[("boxoffice_bookings_total", frozenset())] == 7  # a dead worker's count stays
    assert found[("boxoffice_database_pool_size_connections", READERS)] == 5
    assert found[("boxoffice_database_up", frozenset())] == 1
    assert up != down


def test_one_process_at_a_time_takes_its_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(multiprocess, "DIRECTORY", str(tmp_path))
    assert multiprocess.take_turn("look", 5)
    assert not multiprocess.take_turn("look", 5)  # another worker's, a moment later
    turn = tmp_path / "look.turn"
    turn.write_text(repr(time.time() - 5))
    assert multiprocess.take_turn("look", 5)
    turn.write_text(repr(time.time() - 60))
    with turn.open() as held:  # someone is taking it right now
        fcntl.flock(held, fcntl.LOCK_EX)
        assert not multiprocess.take_turn("look", 5)
    assert multiprocess.take_turn("look", 5)


def test_one_process_always_takes_its_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocess, "DIRECTORY", None)
    assert multiprocess.take_turn("look", 5)
    assert multiprocess.take_turn("look", 5)


def test_serve_gets_a_fresh_folder_or_wipes_the_operators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(multiprocess.ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with multiprocess.metrics_directory(1) as none:
        assert none is None
        assert multiprocess.ENV not in os.environ  # one process keeps its metrics in memory
    with multiprocess.metrics_directory(2) as made:
        assert made is not None
        assert made.is_dir()
        assert made.parent == tmp_path
        assert os.environ[multiprocess.ENV] == str(made)
    assert not made.exists()
    assert multiprocess.ENV not in os.environ

    given = tmp_path / "operators"
    given.mkdir()
    for name in ("counter_12.db", "gauge_livesum_12.db", "histogram_7.db", "inventory.turn"):
        (given / name).write_text("old")
    (given / "notes.db").write_text("not ours")
    monkeypatch.setenv(multiprocess.ENV, str(given))
    with multiprocess.metrics_directory(1) as path:
        assert path == given
        assert sorted(p.name for p in given.iterdir()) == ["notes.db"]
    assert given.is_dir()  # the operator's: kept
