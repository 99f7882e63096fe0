"""The sale report's figures made from the server's histograms (`bench/onsale.py`)."""

from __future__ import annotations

from typing import Any

from bench.onsale import batch_paths, lag_buckets, lag_over_time, refused_setting
from bench.pg_diagnostics import lock_waits, statements_of

EXPOSITION = """\
# HELP boxoffice_event_loop_lag_seconds How late.
# TYPE boxoffice_event_loop_lag_seconds histogram
boxoffice_event_loop_lag_seconds_bucket{le="0.01"} 90.0
boxoffice_event_loop_lag_seconds_bucket{le="0.1"} 99.0
boxoffice_event_loop_lag_seconds_bucket{le="0.25"} 100.0
boxoffice_event_loop_lag_seconds_bucket{le="+Inf"} 100.0
boxoffice_event_loop_lag_seconds_count 100.0
boxoffice_event_loop_lag_seconds_sum 1.5
"""


def point(t: float, within_10ms: float, within_100ms: float, total: float) -> dict[str, Any]:
    bounds = {0.01: within_10ms, 0.1: within_100ms, 0.25: total, float("inf"): total}
    return {"t": t, "lag": bounds}


def test_the_lag_histogram_is_read_from_the_exposition() -> None:
    assert lag_buckets(EXPOSITION) == {0.01: 90.0, 0.1: 99.0, 0.25: 100.0, float("inf"): 100.0}
    assert lag_buckets("") == {}


def test_each_window_counts_only_the_probes_taken_in_it() -> None:
    timeline = [
        point(0, 0, 0, 0),
        {"t": 5},  # a second without a scrape
        point(10, 100, 100, 100),  # quiet: every probe on time
        point(20, 110, 150, 200),  # busy: 100 probes, half over 100 ms late
        point(30, 210, 250, 300),  # the last window, however short
    ]
    windows = lag_over_time(timeline, every_seconds=10)
    assert [(w["from"], w["to"], w["probes"]) for w in windows] == [
        (0, 10, 100),
        (10, 20, 100),
        (20, 30, 100),
    ]
    quiet, busy, _ = windows
    assert (quiet["over_100ms"], quiet["p50_under_ms"], quiet["p99_under_ms"]) == (0, 10, 10)
    assert busy["over_100ms"] == 0.5
    assert (busy["p50_under_ms"], busy["p99_under_ms"]) == (100, 250)


def test_no_scrape_no_window() -> None:
    assert lag_over_time([{"t": 1}, {"t": 2}]) == []
    assert lag_over_time([point(0, 1, 1, 1)]) == []


def test_the_database_sessions_are_averaged_over_each_window() -> None:
    timeline = [
        point(0, 0, 0, 0),
        {"t": 4, "db_active": 2, "lock_waits": 0},
        {"t": 8, "db_active": 6, "lock_waits": 3},
        {**point(10, 100, 100, 100), "db_active": 4, "lock_waits": 3},
        point(20, 200, 200, 200),  # no session sampled in this window (SQLite, or missed)
    ]
    first, second = lag_over_time(timeline, every_seconds=10)
    assert (first["db_active"], first["lock_waits"]) == (4, 2)
    assert (second["db_active"], second["lock_waits"]) == (None, None)


def test_the_batch_paths_are_summed_over_the_workers() -> None:
    exposition = """\
# HELP boxoffice_batch_paths_total Batches by path.
# TYPE boxoffice_batch_paths_total counter
boxoffice_batch_paths_total{path="memory",reason="unchanged",pid="1"} 90.0
boxoffice_batch_paths_total{path="memory",reason="unchanged",pid="2"} 5.0
boxoffice_batch_paths_total{path="locked",reason="refusal",pid="1"} 3.0
# HELP boxoffice_batch_paths_created Batches by path.
# TYPE boxoffice_batch_paths_created gauge
boxoffice_batch_paths_created{path="locked",reason="refusal",pid="1"} 1.7e9
"""
    assert batch_paths(exposition) == {"memory unchanged": 95.0, "locked refusal": 3.0}


# As PostgreSQL 15 logs them with log_lock_waits and log_min_error_statement = log (the
# time left out of each line's prefix).
LOCK_LOG = """\
[5382] LOG:  process 5382 still waiting for ShareLock on transaction 2704 after 5.086 ms
[5382] DETAIL:  Process holding the lock: 5374. Wait queue: 5382.
[5382] CONTEXT:  while locking tuple (0,9) in relation "sections"
[5382] STATEMENT:  SELECT sections.id
\tFROM sections FOR UPDATE
[5382] LOG:  process 5382 acquired ShareLock on transaction 2704 after 49.110 ms
[5382] CONTEXT:  while locking tuple (0,9) in relation "sections"
[5382] STATEMENT:  SELECT sections.id
\tFROM sections FOR UPDATE
[5374] LOG:  process 5374 acquired ShareLock on transaction 2711 after 99.145 ms
[5374] CONTEXT:  while locking tuple (0,13) in relation "sections"
[5374] STATEMENT:  SELECT sections.id
\tFROM sections FOR UPDATE
[5374] LOG:  process 5374 acquired AccessExclusiveLock on tuple (0,13) of relation 16412 \
of database 16384 after 7.5 ms
[5374] STATEMENT:  WITH s_new AS (
\t    SELECT 1)
[5352] LOG:  checkpoint starting: time
"""


def test_lock_waits_are_grouped_by_what_waited_on_what() -> None:
    rows = lock_waits(LOCK_LOG)
    assert [(r["lock"], r["on"], r["statement"], r["waits"]) for r in rows] == [
        (
            "ShareLock",
            'while locking tuple in relation "sections"',
            "SELECT sections.id FROM sections FOR UPDATE",
            2,
        ),
        (
            "AccessExclusiveLock",
            "tuple (N,N) of relation N of database N",
            "WITH s_new AS ( SELECT 1)",
            1,
        ),
    ]
    assert rows[0]["total_ms"] == 49.110 + 99.145
    assert rows[0]["max_ms"] == 99.145


def test_the_statements_are_read_from_psqls_rows() -> None:
    """The query comes last, and may hold a '|' of its own (`a || b`)."""
    rows = (
        "1963|14681.2|7.48|272.1|1963|WITH s_new AS (SELECT a.scope || chr(31) || a.key)\n"
        "7|0.5|0.07|0.2|7|SELECT 1"
    )
    found = statements_of(rows)
    assert [r["statement"] for r in found] == [
        "WITH s_new AS (SELECT a.scope || chr(31) || a.key)",
        "SELECT 1",
    ]
    assert (found[0]["calls"], found[0]["total_ms"], found[0]["mean_ms"]) == (1963, 14681.2, 7.48)


def test_a_wait_logged_as_postgresql_writes_it_verbose_or_ending_in_a_deadlock() -> None:
    """The default prefix ('%m [%p] '), a LOCATION line (log_error_verbosity = verbose), and
    a wait that ended in a deadlock rather than the lock."""
    prefix = "2026-12-03 06:43:47.027 UTC [5382] "
    log = (
        f"{prefix}LOG:  process 5382 acquired ShareLock on transaction 2704 after 49.110 ms\n"
        f'{prefix}CONTEXT:  while locking tuple (0,9) in relation "sections"\n'
        f"{prefix}LOCATION:  ProcSleep, proc.c:1563\n"
        f"{prefix}STATEMENT:  SELECT 1\n"
        f"{prefix}LOG:  process 5382 detected deadlock while waiting for ShareLock on "
        "transaction 2711 after 1000.5 ms\n"
        f'{prefix}CONTEXT:  while locking tuple (0,13) in relation "sections"\n'
        f"{prefix}STATEMENT:  SELECT 1\n"
    )
    (row,) = lock_waits(log)
    assert (row["on"], row["statement"], row["waits"]) == (
        'while locking tuple in relation "sections"',
        "SELECT 1",
        2,
    )
    assert row["max_ms"] == 1000.5


def test_the_diagnostic_tables_are_written_only_when_there_is_something_to_show() -> None:
    from bench.onsale import (
        SaleConfig,
        SaleOutcome,
        _lock_waits_table,
        _paths_table,
        _statements_table,
    )

    sale = SaleOutcome(SaleConfig(lock_waits_ms=5), (0, 0, 0), (0, 0, 0))
    assert _paths_table(sale) + _statements_table(sale) + _lock_waits_table(sale) == []
    sale.batch_paths = {"memory unchanged": 9.0, "locked refusal": 1.0}
    sale.statements = statements_of("3|10.0|3.3|5.0|3|SELECT a || b")
    sale.lock_waits = lock_waits(LOCK_LOG)
    text = "\n".join(_paths_table(sale) + _statements_table(sale) + _lock_waits_table(sale))
    assert "| memory | unchanged | 9 | 90.0% |" in text
    assert "| `SELECT a \\|\\| b` | 3 | 10 | 3.30 | 5 | 3 |" in text  # its pipes escaped
    assert "Waits longer than 5 ms" in text
    assert '| ShareLock | while locking tuple in relation "sections" |' in text


def test_set_takes_only_server_settings_the_run_does_not_set_itself() -> None:
    """`--set`: a misspelt name would run the sale at the defaults, unnoticed."""
    assert refused_setting("WAITING_ROOM_POLLS_PER_WAIT=5") is None
    assert refused_setting("BOOKING_QUEUE_TIMEOUT_MS=a=b") is None  # the value may hold "="
    for bad in ("WAITING_ROOM_POLL_PER_WAIT=5", "=5", "WAITING_ROOM_POLLS_PER_WAIT"):
        assert "NAME=VALUE" in (refused_setting(bad) or "")
    for own in ("DATABASE_URL=postgresql://elsewhere", "LOG_LEVEL=INFO", "KEEP_ALIVE_SECONDS=5"):
        assert refused_setting(own) is not None
