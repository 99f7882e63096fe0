"""The engine for each supported database, tuned so that concurrent writers stay correct.

SQLite: WAL journal (readers never block the writer), a busy timeout (other
processes' writers are waited for, not reported as "database is locked"), and
`BEGIN IMMEDIATE` for write transactions, so the write lock is taken up front
instead of at the first UPDATE, where SQLite could only fail, not wait. Inside
one process, writers queue on an asyncio lock first, which is fairer and cheaper
than SQLite's sleeping busy handler.

aiosqlite runs each statement on its connection's thread and wakes the event
loop for every result: a hop per statement. The booking committer instead runs
a whole transaction on the *writer* (`run_on_writer`), a process of its own by
default, with a blocking pysqlite connection: one hop per batch, however many
statements it takes (see `db/sqlite_writer.py`). Both kinds of connection get
the same tuning.

PostgreSQL: asyncpg, READ COMMITTED; the booking statement is a conditional
UPDATE, which PostgreSQL re-checks against the latest row version after waiting
for a concurrent writer.

How many connections a process opens, and how long anything may wait, is one
`Limits` (from the DB_* settings). On PostgreSQL DB_POOL_SIZE is split between
the readers' pool and the writers' (a third, at least 3: the committer keeps
two, the sweeper takes one); neither overflows, so a process never opens more
than DB_POOL_SIZE. On SQLite the writer's own connection is one of them.
Every PostgreSQL session gets `statement_timeout`, `lock_timeout` and
`idle_in_transaction_session_timeout`, and asyncpg gives up on a silent server
a little after the statement timeout, so no request can wait forever.

Write transactions take their connections from a pool of their own, whose
sessions plan with nested loops only (`KEYED_PLANNING`). Every statement a
writer runs finds its rows by key, from a list of tens of rows handed over as
a JSON document. PostgreSQL cannot count such a list in advance (a function
counts as 100 rows), so it joins it to a table of a few thousand rows by
hashing the whole table; and a prepared statement's plan, made while the tables
were small (a fresh database, before autovacuum's first ANALYZE), stays for
the connection's life. Measured on the checkout benchmark: a batch's statement
went from 7.0 to 3.8 ms at 4,000 holds, and no longer grows with the tables
(docs/performance.md). Readers keep the planner's full choice.

Behind a pooler in transaction mode (pgbouncer `pool_mode = transaction`,
`DB_POOLER=transaction`), consecutive transactions of one connection may run
on different server sessions, and one server session serves many clients in
turn. Two things then change. No statement is named: asyncpg's statement
cache is off, so every statement is the unnamed one, parsed again with each
execution in the same message as its Bind, and nothing a session prepared can
clash with another client's statement or outlive its transaction
(SQLAlchemy's cache still keeps each statement's description, which names no
statement on the server). And the session settings above are not startup
parameters (pgbouncer refuses them; told to ignore them, it would pass them to
no server session): every BEGIN carries them as `SET LOCAL`, in the BEGIN's
round trip, and they end with the transaction; a statement run outside a
transaction gets one (`db/driver.py`). `application_name` stays a startup
parameter: pgbouncer sets it on whichever session serves the client.

A pooled PostgreSQL connection is pinged before use only when it has been idle
for PING_AFTER_IDLE_SECONDS (`_ping_after_idle`). SQLAlchemy's `pool_pre_ping`
pings on every checkout, and asyncpg's ping is three round trips (BEGIN, `;`,
ROLLBACK): under a sale's load a one-statement queue join took four round trips,
an API key's lookup six. A connection the server has closed since (a restart, a
failover) is known without a ping, from asyncpg's socket, and is never handed
out: the pool replaces all its connections, as after a failed ping. What a ping
would still catch on a connection used a moment ago, a server gone without
closing it, the first statement meets instead: the requests it serves (a batch,
a coalesced read) fail as unavailable (503), and the pool is replaced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import asyncpg
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from boxoffice.config import Settings
from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.db.sqlite_writer import Job, ProcessWriter, ThreadWriter, Writer, WriterKind

Dialect = Literal["sqlite", "postgresql"]
# DB_POOLER: "transaction" when a pooler in transaction mode stands between us and PostgreSQL.
Pooler = Literal["none", "transaction"]

BEGIN_MODE_OPTION = "boxoffice_sqlite_begin"

T = TypeVar("T")

# asyncpg's own deadline past the server's statement_timeout: the server cancels first and
# says why; this only ends the wait for a server that went silent (a network partition).
CLIENT_GRACE_SECONDS = 2.0
IDLE_IN_TRANSACTION_SECONDS = 60
# A pooled connection idle this long is pinged before it is handed out (`_ping_after_idle`).
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "boxoffice.idle_since"  # in a pooled connection's info: `time.monotonic()`
_USED_UNTIL = "boxoffice.used_until"  # set by a holder that kept it unused (`note_last_use`)


@dataclass(frozen=True, slots=True)
class Limits:
    """How many connections a process opens, and how long each wait may last (seconds)."""

    pool_size: int = 20
    connect_timeout: float = 5.0
    pool_timeout: float = 5.0
    statement_timeout: float = 10.0
    lock_timeout: float = 5.0
    busy_timeout: float = 10.0  # SQLite: how long a writer waits for another's lock

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            pool_size=settings.db_pool_size,
            connect_timeout=settings.db_connect_timeout_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
            lock_timeout=settings.db_lock_timeout_seconds,
            busy_timeout=settings.sqlite_busy_timeout_seconds,
        )

    def split(self) -> tuple[int, int]:
        """PostgreSQL: (readers' pool, writers' pool), together `pool_size`."""
        writers = max(3, self.pool_size // 3)
        return max(1, self.pool_size - writers), writers


class Database:
    """An engine plus what its dialect needs to run transactions safely."""

    def __init__(
        self,
        engine: AsyncEngine,
        dialect: Dialect,
        *,
        writer: Writer | None = None,
        write_engine: AsyncEngine | None = None,
        pooler: Pooler = "none",
    ) -> None:
        self.engine = engine
        self.pooler: Pooler = pooler  # DB_POOLER: session settings ride on each BEGIN
        # PostgreSQL: write transactions' own pool (KEYED_PLANNING); SQLite: the same engine.
        self.write_engine = engine if write_engine is None else write_engine
        self.dialect: Dialect = dialect
        # Only SQLite needs them: one writer at a time per file, and the writer.
        self.write_lock: asyncio.Lock | None = asyncio.Lock() if dialect == "sqlite" else None
        self.writer = writer
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls.from_url(
            settings.async_url,
            limits=Limits.from_settings(settings),
            sqlite_writer=settings.sqlite_writer,
            pooler=settings.db_pooler,
        )

    @classmethod
    def from_url(
        cls,
        url: URL,
        *,
        limits: Limits = Limits(),
        sqlite_writer: WriterKind = "process",
        pooler: Pooler = "none",
    ) -> Database:
        if url.get_backend_name() == "sqlite":
            busy = limits.busy_timeout
            writer: Writer
            if sqlite_writer == "process":
                writer = ProcessWriter(url, busy)
            else:
                writer = ThreadWriter(lambda: sqlite_blocking_engine(url, busy))
            engine = _sqlite_engine(url, max(1, limits.pool_size - 1), limits)
            return cls(engine, "sqlite", writer=writer)
        readers, writers = limits.split()
        return cls(
            _postgresql_engine(url, readers, limits, pooler=pooler),
            "postgresql",
            write_engine=_postgresql_engine(
                url, writers, limits, settings=KEYED_PLANNING, pooler=pooler
            ),
            pooler=pooler,
        )

    async def connect(self, *, write: bool) -> AsyncConnection:
        """A pooled connection whose next `begin()` starts the right kind of transaction."""
        conn = await (self.write_engine if write else self.engine).connect()
        if self.dialect == "sqlite":
            await conn.execution_options(
                **{BEGIN_MODE_OPTION: "IMMEDIATE" if write else "DEFERRED"}
            )
        return conn

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def identify_server(self) -> str:
        """Which server answers, or raise: on PostgreSQL its address, port and start time
        (a failover or a restart changes it); on SQLite always ''."""
        async with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                await conn.execute(text("SELECT 1"))
                return ""
            row = (await conn.execute(text(_WHICH_SERVER))).one()
        return " ".join(str(value) for value in row)

    def pool_usage(self) -> dict[str, tuple[int, int]]:
        """Per pool, (connections checked out, connections it may open)."""
        pools = {"shared" if self.dialect == "sqlite" else "readers": self.engine.pool}
        if self.write_engine is not self.engine:
            pools["writers"] = self.write_engine.pool
        return {
            name: (pool.checkedout(), pool.size())
            for name, pool in pools.items()
            if isinstance(pool, QueuePool)
        }

    async def start_writer(self) -> None:
        """SQLite: have the writer ready (its process started), so no request waits for it."""
        if self.writer is not None:
            await self.writer.start()

    async def run_on_writer(self, job: Job[T]) -> T:
        """SQLite: run `job(engine, gate)` on the writer, under the write lock.

        One hop from the event loop, whatever `job` does (see `db/sqlite_writer.py`).
        The writer cannot be interrupted: if the caller is cancelled meanwhile,
        `gate.allows()` says no for `job` to roll back instead of committing, and the
        write lock is held until `job` has finished, so no other writer of this
        process overlaps it.
        """
        if self.writer is None or self.write_lock is None:
            raise RuntimeError("only SQLite has a writer")
        async with self.write_lock:
            if self._closed:  # checked under the lock: dispose() takes it too
                raise DatabaseUnavailable("the database has been closed")
            return await self.writer.run(job)

    async def dispose(self) -> None:
        self._closed = True
        if self.writer is not None and self.write_lock is not None:
            async with self.write_lock:  # a job still running finishes first
                await self.writer.close()
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


# inet_server_addr() is NULL over a Unix socket; the start time still tells a restart.
_WHICH_SERVER = "SELECT inet_server_addr(), inet_server_port(), pg_postmaster_start_time()"


def run_on_database(settings: Settings, use: Callable[[Database], Awaitable[T]]) -> T:
    """Run `use` on a short-lived engine for `settings`, from outside any event loop
    (a command's one piece of database work)."""

    async def run() -> T:
        # A command reads whole tables (check, audit verify, backup): the request-sized
        # statement timeout does not fit it.
        limits = replace(Limits.from_settings(settings), statement_timeout=3600.0)
        database = Database.from_url(
            settings.async_url,
            limits=limits,
            sqlite_writer=settings.sqlite_writer,
            pooler=settings.db_pooler,
        )
        try:
            return await use(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def _sqlite_engine(url: URL, pool_size: int, limits: Limits) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=limits.pool_timeout,
        connect_args={"timeout": limits.busy_timeout, "check_same_thread": False},
    )
    _tune_sqlite(engine.sync_engine, limits.busy_timeout)
    return engine


def sqlite_blocking_engine(url: URL, timeout_seconds: float) -> Engine:
    """pysqlite, for the writer only: one connection, kept in the pool."""
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"),
        pool_size=1,
        max_overflow=0,
        pool_timeout=timeout_seconds,
        connect_args={"timeout": timeout_seconds, "check_same_thread": False},
    )
    _tune_sqlite(engine, timeout_seconds)
    return engine


def _tune_sqlite(engine: Engine, timeout_seconds: float) -> None:
    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's own BEGIN is always DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout_seconds * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(BEGIN_MODE_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


# The write pool's sessions: nested loops only, so keyed rows are found through their
# index whatever the planner believes about the tables' sizes (see the module's docstring).
KEYED_PLANNING = {"enable_hashjoin": "off", "enable_mergejoin": "off"}


def _postgresql_engine(
    url: URL,
    pool_size: int,
    limits: Limits,
    *,
    settings: dict[str, str] | None = None,
    pooler: Pooler = "none",
) -> AsyncEngine:
    session = {
        "statement_timeout": f"{int(limits.statement_timeout * 1000)}ms",
        "lock_timeout": f"{int(limits.lock_timeout * 1000)}ms",
        "idle_in_transaction_session_timeout": f"{IDLE_IN_TRANSACTION_SECONDS}s",
        **(settings or {}),
    }
    connect_args: dict[str, Any] = {
        # SQLAlchemy's asyncpg adapter opens connections with this coroutine.
        "async_creator_fn": connect_host_by_host,
        "timeout": limits.connect_timeout,
        "command_timeout": limits.statement_timeout + CLIENT_GRACE_SECONDS,
    }
    if pooler == "none":
        connect_args["server_settings"] = {"application_name": "boxoffice", **session}
    else:
        connect_args |= {
            "server_settings": {"application_name": "boxoffice"},
            "connection_class": settings_per_transaction(session),
            # asyncpg: no cache, so every statement is the unnamed one, parsed again with each
            # execution; SQLAlchemy then gets unnamed statements from prepare() too.
            "statement_cache_size": 0,
            # Said outright, should asyncpg's default for prepare() ever change.
            "prepared_statement_name_func": _unnamed,
        }
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=limits.pool_timeout,
        connect_args=connect_args,
    )
    _ping_after_idle(engine)
    return engine


def _ping_after_idle(engine: AsyncEngine) -> None:
    """`pool_pre_ping`, for connections idle PING_AFTER_IDLE_SECONDS only.

    The same ping and the same consequences as SQLAlchemy's: a connection found dead
    makes the pool replace every connection it holds, and the checkout retries with
    a new one. A connection just opened is not pinged, as SQLAlchemy does not.
    """
    sync = engine.sync_engine
    dialect = sync.dialect

    @event.listens_for(sync.pool, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:  # None: invalidated, to be opened afresh
            used_until = record.info.pop(_USED_UNTIL, None)
            record.info[_IDLE_SINCE] = time.monotonic() if used_until is None else used_until

    @event.listens_for(sync.pool, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            # The server closed it (a restart, a failover, pg_terminate_backend) and asyncpg
            # saw the socket go: known without a round trip, whenever it was last used.
            raise sa_exc.InvalidatePoolError("the server closed the connection")
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return  # just opened, or back from use a moment ago
        # SQLAlchemy's pre-ping also runs `handle_error` hooks; we register none.
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:  # as SQLAlchemy's own pre-ping catches
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise sa_exc.InvalidatePoolError(str(error)) from error
            raise


async def note_last_use(conn: AsyncConnection, at: float) -> None:
    """Tell the pool `conn` has been unused since `at` (`time.monotonic()`), though it was
    checked out all along: when given back, it is pinged before its next use as if it
    had been idle in the pool since then."""
    raw = await conn.get_raw_connection()
    raw.info[_USED_UNTIL] = at


async def connect_host_by_host(**options: Any) -> Any:
    """asyncpg's connection to the first host of the URL that takes it, each host tried
    within its own `timeout`, as libpq does.

    asyncpg gives all the hosts of a URL one deadline together: a dead primary whose
    address drops packets would use it all, the next host would never be tried, and
    no failover would ever be followed. A host that refuses, stays silent past the
    timeout or does not match `target_session_attrs` (a standby) passes the turn on;
    if none takes the connection, the last host's error is raised.
    """
    hosts, ports = options.pop("host", None), options.pop("port", None)
    if not isinstance(hosts, list):
        return await asyncpg.connect(host=hosts, port=ports, **options)
    last_error: Exception | None = None
    for host, port in zip(hosts, ports, strict=True):
        try:
            return await asyncpg.connect(host=host, port=port, **options)
        except Exception as error:
            last_error = error
    assert last_error is not None
    raise last_error


def _unnamed() -> str:
    return ""


class SettingsPerTransaction(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose every BEGIN sets the session's settings for its transaction.

    Behind a transaction pooler a session setting would stay with the server
    session, for whichever client it serves next; `SET LOCAL` ends with the
    transaction. Sent in the same simple query as the BEGIN, it costs no round
    trip. asyncpg starts every transaction with `execute("BEGIN …;")`.
    """

    set_local = ""

    async def execute(  # asyncpg's own signature
        self,
        query: str,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> str:
        if not args and query.startswith("BEGIN"):
            query += self.set_local
        status: str = await super().execute(query, *args, timeout=timeout)
        return status


def settings_per_transaction(session: dict[str, str]) -> type[SettingsPerTransaction]:
    """The connection class whose transactions all start with `session`'s settings."""

    class SessionSettingsPerTransaction(SettingsPerTransaction):
        set_local = "".join(f" SET LOCAL {name} = '{value}';" for name, value in session.items())

    return SessionSettingsPerTransaction
