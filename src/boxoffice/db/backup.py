"""Back up the database while the server runs, and restore it where no live data is lost.

A backup is one consistent moment of the whole database: every booking, hold,
key and audit record committed before it, none after, and `alembic_version`,
so a restored database is at the schema revision it was taken at.

SQLite: the online backup API (`sqlite3.Connection.backup`) copies every page
in one step, inside one read transaction. In WAL mode readers never block the
writer, so the server keeps booking meanwhile, and the copy is the database as
of that transaction's start. The file is then a plain single file (rollback
journal), checked with `PRAGMA quick_check`.

PostgreSQL: `pg_dump --format=custom`, which reads in one REPEATABLE READ
snapshot; `pg_restore` restores into an empty database only, in one
transaction, so a failed restore leaves it empty. The connection comes from
DATABASE_URL as a libpq connection string without the password; the password
goes to the tools in PGPASSWORD, never on a command line.

Both end the same way: the new file is written beside its destination under a
temporary name, flushed to disk, then renamed over it, so a crash leaves the old
file or the new one, never half of one.

    backup(settings, path)   -> Backup   the database named by DATABASE_URL -> path
    restore(settings, path)  -> Backup   path -> the database named by DATABASE_URL
    BackupRefused                        every refusal and failure; its message says why
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.engine import URL

from boxoffice.config import Settings
from boxoffice.db.database import Database, Dialect, run_on_database
from boxoffice.db.errors import describe
from boxoffice.db.migrate import current_revision

T = TypeVar("T")

__all__ = [
    "Backup",
    "BackupRefused",
    "backup",
    "backup_kind",
    "libpq_connection",
    "pg_tool",
    "restore",
]

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"

# A SQLite connection in WAL mode holds a shared lock on this byte of the -shm file for
# as long as it is open (the "DMS" lock, os_unix.c): whoever can lock it alone is alone.
_SQLITE_SHM_DMS_BYTE = 128

_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

_KIND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


class BackupRefused(Exception):
    """A backup or restore that did not happen, and why (never with a password in it)."""


@dataclass(frozen=True, slots=True)
class Backup:
    """What a backup holds, or what a restore put back."""

    path: Path  # the backup file
    dialect: Dialect
    revision: str  # the schema revision in it
    size: int  # bytes


def backup(settings: Settings, path: Path, *, force: bool = False) -> Backup:
    """Write a consistent copy of the database to `path`; safe while servers write to it.

    Refuses an existing `path` unless `force`; then it is replaced only once the new
    backup is complete.
    """
    if path.is_dir():
        raise BackupRefused(f"{path} is a folder: name the backup file to write")
    if path.exists() and not force:
        raise BackupRefused(f"{path} exists already: pass --force to replace it")
    if settings.dialect == "sqlite":
        source = _sqlite_path(settings)
        if path.resolve() in _sqlite_files(source):
            raise BackupRefused(f"{path} is the database itself: write the backup elsewhere")
        with _replacing(path) as temp:
            revision = _sqlite_backup(source, temp, settings.sqlite_busy_timeout_seconds)
    else:
        revision = _postgresql_revision(settings)
        with _replacing(path) as temp:
            _run_pg_tool(
                settings,
                "pg_dump",
                ["--format=custom", "--no-password", f"--file={temp}"],
            )
            _check_dump(settings, temp)
    return Backup(path, settings.dialect, revision, path.stat().st_size)


def restore(settings: Settings, path: Path, *, force: bool = False) -> Backup:
    """Put the database named by DATABASE_URL back as it was in the backup at `path`.

    SQLite: replaces the database file at once (a missing one is created); an existing
    one only with `force`, and never while a process has it open. PostgreSQL: restores
    into the configured database, which must be empty (`createdb` a new one). Either way
    the database ends up whole from the backup, or as it was.
    """
    found = backup_kind(path)
    if found != settings.dialect:
        raise BackupRefused(
            f"{path} is a {_KIND_NAMES[found]} backup, but DATABASE_URL names a "
            f"{_KIND_NAMES[settings.dialect]} database: restore it into a {_KIND_NAMES[found]} one"
        )
    if settings.dialect == "sqlite":
        target = _sqlite_path(settings)
        revision = _sqlite_restore(path, target, settings.sqlite_busy_timeout_seconds, force=force)
    else:
        if force:
            raise BackupRefused(
                "--force replaces SQLite files only: on PostgreSQL, restore into an empty "
                "database (createdb a new one, or dropdb and createdb this one with every "
                "server stopped)"
            )
        _check_dump(settings, path)
        _refuse_unless_empty(settings)
        _run_pg_tool(
            settings,
            "pg_restore",
            [
                "--no-password",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                str(path),
            ],
        )
        revision = _postgresql_revision(settings)
    return Backup(path, settings.dialect, revision, path.stat().st_size)


def backup_kind(path: Path) -> Dialect:
    """Which database made the backup at `path`, from its first bytes."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise BackupRefused(f"no backup at {path}") from None
    except OSError as error:
        raise BackupRefused(f"cannot read {path}: {error.strerror}") from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_DUMP_MAGIC):
        return "postgresql"
    raise BackupRefused(
        f"{path} is not a Boxoffice backup (neither a SQLite database nor a pg_dump archive)"
    )


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` that becomes `path` whole if the block succeeds.

    It is flushed to disk before the rename, and the rename itself after, so a crash
    leaves either the old `path` or the new one; a failure leaves no temporary file. It
    gets the mode and owner of the file it replaces; a new one is for its owner only
    (backups hold API keys' hashes and customers' ids).
    """
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise BackupRefused(f"cannot write beside {path}: {error.strerror}") from None
    os.close(handle)  # mkstemp made it 0600
    temp = Path(name)
    try:
        if path.exists():
            existing = path.stat()
            temp.chmod(existing.st_mode & 0o777)
            with contextlib.suppress(PermissionError):  # only root gives a file away
                os.chown(temp, existing.st_uid, existing.st_gid)
        yield temp
        _fsync(temp)
        temp.replace(path)
        _fsync(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


# SQLite


def _sqlite_path(settings: Settings) -> Path:
    database = settings.async_url.database
    assert database, "Settings refuses a SQLite URL without a file"
    return Path(database).absolute()


def _sqlite_files(database: Path) -> set[Path]:
    """The database file and the side files SQLite keeps beside it."""
    real = database.resolve()
    return {real, *(real.with_name(real.name + side) for side in _SQLITE_SIDE_FILES)}


def _sqlite_connect(path: Path, mode: str, timeout_seconds: float) -> sqlite3.Connection:
    """A connection to an existing file (`mode` ro or rw); it never creates one."""
    connection = sqlite3.connect(
        f"{path.absolute().as_uri()}?mode={mode}",
        uri=True,
        timeout=timeout_seconds,
        isolation_level=None,
    )
    connection.execute(f"PRAGMA busy_timeout={int(timeout_seconds * 1000)}")
    return connection


def _sqlite_backup(source: Path, destination: Path, timeout_seconds: float) -> str:
    if not source.is_file():
        raise BackupRefused(f"no SQLite database at {source} (DATABASE_URL)")
    try:
        origin = _sqlite_connect(source, "rw", timeout_seconds)
        try:
            return _sqlite_copy(origin, destination, f"the copy of {source}")
        finally:
            origin.close()
    except sqlite3.Error as error:
        raise BackupRefused(f"the backup of {source} failed: {error}") from None


def _sqlite_copy(origin: sqlite3.Connection, destination: Path, copied: str) -> str:
    """Copy `origin`'s database into `destination`, check the copy, return its revision.

    Every page in one step (pages=-1), so in one read transaction: one moment. The copy
    is made a single self-contained file (rollback journal, no -wal beside it).
    """
    copy = sqlite3.connect(destination, isolation_level=None)
    try:
        origin.backup(copy, pages=-1)
        copy.execute("PRAGMA journal_mode=DELETE")
        verdict = copy.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise BackupRefused(f"{copied} is damaged: {verdict}")
        return _sqlite_revision(copy, copied)
    finally:
        copy.close()


def _sqlite_revision(connection: sqlite3.Connection, copied: str) -> str:
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        row = None
    if row is None:
        raise BackupRefused(
            f"{copied} holds no Boxoffice schema (no alembic_version): was it ever migrated?"
        )
    return str(row[0])


def _sqlite_restore(backup_path: Path, target: Path, timeout_seconds: float, *, force: bool) -> str:
    if _sqlite_in_use(target):
        raise BackupRefused(
            f"{target} is open in another process (a server?): stop every server first"
        )
    if target.exists() and target.stat().st_size > 0 and not force:
        raise BackupRefused(
            f"{target} exists already: pass --force to replace it (with every server stopped)"
        )
    with _replacing(target) as temp:
        try:
            source = _sqlite_connect(backup_path, "ro", timeout_seconds)
            try:
                _sqlite_revision(source, str(backup_path))
                revision = _sqlite_copy(source, temp, str(backup_path))
            finally:
                source.close()
        except sqlite3.Error as error:
            raise BackupRefused(f"cannot restore from {backup_path}: {error}") from None
        _set_aside_sqlite(target, timeout_seconds)
    return revision


def _set_aside_sqlite(target: Path, timeout_seconds: float) -> None:
    """Before the rename over `target`: fold its WAL into it, then remove its side files.

    A -wal or -journal left beside the restored file would be replayed onto it, pages of
    another database; folded in first, a crash before the rename loses nothing.
    """
    if target.exists():
        with contextlib.suppress(sqlite3.Error):  # damaged beyond reading: replaced anyway
            old = _sqlite_connect(target, "rw", timeout_seconds)
            try:
                old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                old.close()
    if _sqlite_in_use(target):
        raise BackupRefused(f"{target} was opened meanwhile: stop every server first")
    for side in _SQLITE_SIDE_FILES:
        Path(f"{target}{side}").unlink(missing_ok=True)


def _sqlite_in_use(path: Path) -> bool:
    """True when another process has the WAL database at `path` open.

    (POSIX locks cannot see this process's own connections; it has none open here.)
    """
    try:
        handle = os.open(f"{path}-shm", os.O_RDWR)
    except FileNotFoundError:
        return False  # every connection gone; the last one removed it
    except OSError:
        return True  # we cannot tell: say so rather than replace a live file
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SQLITE_SHM_DMS_BYTE)
    except OSError:
        return True
    finally:
        os.close(handle)  # and with it the lock, had we got it
    return False


# PostgreSQL


def libpq_connection(url: URL, *, connect_timeout: float) -> tuple[str, dict[str, str]]:
    """DATABASE_URL as a libpq connection string without the password, and the password
    in an environment (PGPASSWORD) for the tools.

    Multi-host URLs (`?host=a:5432&host=b:5432`, as asyncpg takes them) become libpq's
    `host=a,b port=5432,5432`; `ssl`/`sslmode` and `target_session_attrs` carry over.
    """
    parts: dict[str, str] = {"application_name": "boxoffice-backup"}
    hosts = url.query.get("host")
    if hosts:
        names, ports = [], []
        for entry in (hosts,) if isinstance(hosts, str) else hosts:
            name, _, port = entry.partition(":")
            names.append(name)
            ports.append(port or str(url.port or 5432))
        parts["host"], parts["port"] = ",".join(names), ",".join(ports)
    else:
        if url.host:
            parts["host"] = url.host
        if url.port:
            parts["port"] = str(url.port)
    if url.username:
        parts["user"] = url.username
    if url.database:
        parts["dbname"] = url.database
    sslmode = url.query.get("sslmode") or url.query.get("ssl")
    if isinstance(sslmode, str):
        parts["sslmode"] = {"true": "require", "false": "disable"}.get(sslmode, sslmode)
    attrs = url.query.get("target_session_attrs")
    if isinstance(attrs, str):
        parts["target_session_attrs"] = attrs
    parts["connect_timeout"] = str(max(1, round(connect_timeout)))
    conninfo = " ".join(f"{key}={_libpq_quote(value)}" for key, value in parts.items())
    env = {} if url.password is None else {"PGPASSWORD": str(url.password)}
    return conninfo, env


def _libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pg_tool(name: str, pg_bin: str = "") -> Path:
    """Where PostgreSQL's `name` is: PG_BIN, else the newest /usr/lib/postgresql/N/bin
    (a newer pg_dump reads older servers), else PATH."""
    if pg_bin:
        if (Path(pg_bin) / name).is_file():
            return Path(pg_bin) / name
        raise BackupRefused(f"PG_BIN={pg_bin} holds no {name}")
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    for folder in sorted(versions, key=lambda p: _version(p.parent.name), reverse=True):
        if (folder / name).is_file():
            return folder / name
    found = shutil.which(name)
    if found:
        return Path(found)
    raise BackupRefused(
        f"{name} not found: install PostgreSQL's client programs (Debian: postgresql-client) "
        "or set PG_BIN to the folder that holds them"
    )


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _run_pg_tool(settings: Settings, name: str, arguments: list[str]) -> None:
    """Run pg_dump or pg_restore against DATABASE_URL; BackupRefused if it fails."""
    conninfo, secret = libpq_connection(
        settings.async_url, connect_timeout=settings.db_connect_timeout_seconds
    )
    command = [str(pg_tool(name, settings.pg_bin)), f"--dbname={conninfo}", *arguments]
    done = subprocess.run(
        command, env={**os.environ, **secret}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit status {done.returncode}"
        password = secret.get("PGPASSWORD")
        if password:  # libpq never prints it; make sure of that
            message = message.replace(password, "***")
        raise BackupRefused(f"{name} failed: {message}")


def _check_dump(settings: Settings, path: Path) -> None:
    """Refuse a file pg_restore cannot read, or a dump without Boxoffice's schema."""
    listing = subprocess.run(
        [str(pg_tool("pg_restore", settings.pg_bin)), "--list", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if listing.returncode != 0:
        message = listing.stderr.strip().splitlines()[-1:] or ["unreadable"]
        raise BackupRefused(f"{path} is not a readable pg_dump archive: {message[0]}")
    if not re.search(r"TABLE DATA \S+ alembic_version\b", listing.stdout):
        raise BackupRefused(
            f"{path} holds no Boxoffice schema (no alembic_version): was it ever migrated?"
        )


_RELATIONS = text(
    "SELECT count(*) FROM pg_class JOIN pg_namespace ON pg_namespace.oid = relnamespace "
    "WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg_%'"
)


def _refuse_unless_empty(settings: Settings) -> None:
    async def relations(database: Database) -> int:
        async with database.engine.connect() as conn:
            return int((await conn.execute(_RELATIONS)).scalar_one())

    found = _on_postgresql(settings, relations)
    if found:
        database = settings.async_url.database
        raise BackupRefused(
            f"the database {database!r} is not empty (it holds {found} tables, indexes or "
            "sequences): restore into an empty one (createdb a new one, point DATABASE_URL at it)"
        )


def _postgresql_revision(settings: Settings) -> str:
    revision = _on_postgresql(settings, current_revision)
    if revision is None:
        raise BackupRefused(
            f"the database {settings.async_url.database!r} holds no Boxoffice schema "
            "(no alembic_version): was it ever migrated?"
        )
    return revision


def _on_postgresql(settings: Settings, use: Callable[[Database], Awaitable[T]]) -> T:
    """Run `use` on a short-lived engine; an unreachable database is a BackupRefused."""
    try:
        return run_on_database(settings, use)
    except Exception as error:
        raise BackupRefused(f"cannot reach the postgresql database: {describe(error)}") from None
