"""What a database ran, grouped into transactions: PostgreSQL's statement log, or
SQLite's trace callback on the writer's connection (the `traced` fixture)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, event

from tests.support.postgres import ThrowawayPostgres

_WRITES = re.compile(r"^\s*(?:WITH|INSERT|UPDATE|DELETE)\b|\bFOR\s+(?:NO\s+KEY\s+)?UPDATE\b", re.I)


@dataclass
class Transactions:
    """Statements as a database ran them, grouped into transactions per connection.

    `explicit[i]` says whether `done[i]` ran between BEGIN and COMMIT (or ROLLBACK), so
    two round trips more than a statement that was its own transaction.
    """

    done: list[list[str]] = field(default_factory=list)
    explicit: list[bool] = field(default_factory=list)
    _open: dict[object, list[str]] = field(default_factory=dict)

    def ran(self, connection: object, sql: str) -> None:
        word = sql.lstrip().split(None, 1)[0].upper().rstrip(";") if sql.strip() else ""
        if word in ("BEGIN", "START"):
            self._open[connection] = []
        elif word in ("COMMIT", "ROLLBACK", "END"):
            opened = connection in self._open
            self.done.append(self._open.pop(connection, []))
            self.explicit.append(opened)
        elif connection in self._open:
            self._open[connection].append(sql)
        else:
            self.done.append([sql])  # a statement that is its own transaction
            self.explicit.append(False)

    def alone(self, sql: str) -> bool:
        """Every statement containing `sql` ran, and each as its own transaction."""
        found = [
            explicit
            for statements, explicit in zip(self.done, self.explicit, strict=True)
            if any(sql in statement for statement in statements)
        ]
        return bool(found) and not any(found)

    def writes(self) -> list[str]:
        """Every statement of every transaction that wrote or locked anything."""
        return [sql for tx in self.done if any(_WRITES.search(s) for s in tx) for sql in tx]


_PG_ENTRY = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (\w+):  (.*)$")
_PG_STATEMENT = re.compile(r"^(?:statement|execute [^:]+): (.*)$", re.S)


def pg_statements(log: str) -> Transactions:
    """Parse PostgreSQL's log (`log_statement = all`, the default prefix '%m [%p] ')."""
    entries: list[tuple[str, str, str]] = []
    for line in log.splitlines():
        found = _PG_ENTRY.match(line)
        if found:
            entries.append(found.groups())  # type: ignore[arg-type]
        elif entries:  # a statement's next line
            pid, level, message = entries[-1]
            entries[-1] = (pid, level, f"{message}\n{line}")
    seen = Transactions()
    for pid, level, message in entries:
        statement = _PG_STATEMENT.match(message) if level == "LOG" else None
        if statement:
            seen.ran(pid, statement.group(1))
    return seen


@pytest.fixture
def traced(
    database_url: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[], Transactions]]:
    """What the database has run since the test began, grouped into transactions."""
    if database_url.startswith("sqlite"):
        seen = Transactions()

        def trace(dbapi_connection: Any, _record: Any) -> None:
            if isinstance(dbapi_connection, sqlite3.Connection):  # the writer's
                dbapi_connection.set_trace_callback(lambda sql: seen.ran(dbapi_connection, sql))

        event.listen(Engine, "connect", trace)
        try:
            yield lambda: seen
        finally:
            event.remove(Engine, "connect", trace)
        return
    postgres: ThrowawayPostgres = request.getfixturevalue("postgres")
    name = database_url.rsplit("/", 1)[1]
    postgres.psql(f"ALTER DATABASE \"{name}\" SET log_statement = 'all'")  # new sessions
    log = postgres.root / "log"
    start = log.stat().st_size

    def since_start() -> Transactions:
        with log.open() as handle:
            handle.seek(start)
            return pg_statements(handle.read())

    yield since_start
