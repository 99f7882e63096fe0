"""PostgreSQL's own view of a benchmark run: its lock waits and its time by statement.

Both cost the database something (a deadlock check at every wait past the
threshold; a hash per statement), so the sale turns them on only when asked
(`python -m bench.onsale --lock-waits MS --statements`). They answer what the
server's histograms cannot: whether a batch waited for another process's row
locks, and how much of its time PostgreSQL itself spent.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from typing import TypedDict

from sqlalchemy.engine import make_url
from tests.support.postgres import psql

# Settings for a throwaway cluster (`ThrowawayPostgres(extra_conf=...)`).
STATEMENTS_CONF = {"shared_preload_libraries": "'pg_stat_statements'"}


def lock_wait_logging(ms: int) -> dict[str, str]:
    """Settings that log every lock wait longer than `ms` (none for 0), with the waiting
    statement; the deadlock check runs that often too, so the published sale runs
    without."""
    if ms <= 0:
        return {}
    return {
        "log_lock_waits": "on",
        "deadlock_timeout": f"'{ms}ms'",
        "log_min_error_statement": "log",
    }


class LockWait(TypedDict):
    """The waits of one lock mode, on one kind of row, by one statement."""

    lock: str
    on: str
    statement: str
    waits: int
    total_ms: float
    p50_ms: float
    max_ms: float


# A wait as PostgreSQL 15 logs it once it ends (acquired, or a deadlock found), in
# English, whatever the line prefix; then its CONTEXT (the row), an optional LOCATION
# (log_error_verbosity = verbose) and the STATEMENT, continued on tab-led lines.
_WAITED = re.compile(
    r"LOG:  process \d+ (?:acquired|detected deadlock while waiting for) (\w+) on (.*?)"
    r" after ([\d.]+) ms"
    r"(?:\n.*CONTEXT:  (.*))?(?:\n.*LOCATION:  .*)?(?:\n.*STATEMENT:  ((?:.|\n\t)*))?"
)


def lock_waits(log: str) -> list[LockWait]:
    """The lock waits of a cluster's log (`log_lock_waits`), grouped by the lock, the row
    it was for and the statement's first words; most time first."""
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for mode, on, ms, context, statement in _WAITED.findall(log):
        what = re.sub(r"\d+", "N", on) if not context else re.sub(r"\(\d+,\d+\)", "", context)
        words = " ".join(statement.split())
        groups[(mode, " ".join(what.split()), words[:60])].append(float(ms))
    rows = [
        LockWait(
            lock=mode,
            on=on,
            statement=statement,
            waits=len(times),
            total_ms=sum(times),
            p50_ms=sorted(times)[len(times) // 2],
            max_ms=max(times),
        )
        for (mode, on, statement), times in groups.items()
    ]
    return sorted(rows, key=lambda row: -row["total_ms"])


class StatementTime(TypedDict):
    """One statement's time inside PostgreSQL (`pg_stat_statements`), lock waits included."""

    calls: int
    total_ms: float
    mean_ms: float
    max_ms: float
    rows: int
    statement: str


_TOP_STATEMENTS = (
    "SELECT calls, total_exec_time, mean_exec_time, max_exec_time, rows,"
    " left(regexp_replace(query, '\\s+', ' ', 'g'), 70)"
    " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
    " WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 15"
)


def _sql(database_url: str, sql: str) -> str:
    url = make_url(database_url)
    name = url.database or ""
    return psql(url.port or 5432, sql, user=url.username or "postgres", database=name)


def start_counting_statements(database_url: str) -> None:
    """From now on, count this database's statements afresh."""
    _sql(database_url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    _sql(database_url, "SELECT pg_stat_statements_reset()")


def top_statements(database_url: str) -> list[StatementTime]:
    """The statements that took this database's time since `start_counting_statements`;
    none if psql fails (a diagnostic must not cost the run its report)."""
    try:
        return statements_of(_sql(database_url, _TOP_STATEMENTS))
    except subprocess.CalledProcessError:
        return []


def statements_of(rows: str) -> list[StatementTime]:
    """psql's unaligned rows of `_TOP_STATEMENTS`; the query comes last, so a '|' of its
    own stays in it. A line that is not such a row is skipped."""
    found = []
    for line in rows.splitlines():
        fields = line.split("|", 5)
        try:
            calls, total, mean, most, count, query = fields
            found.append(
                StatementTime(
                    calls=int(calls),
                    total_ms=float(total),
                    mean_ms=float(mean),
                    max_ms=float(most),
                    rows=int(count),
                    statement=query,
                )
            )
        except ValueError:
            continue
    return found
