"""A throwaway PostgreSQL cluster on a free loopback port, for tests and benchmarks.

PostgreSQL refuses to run as root, so as root the server runs as the
`postgres` user; its data folder (and every folder above) is made reachable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PG_BIN_CANDIDATES = [
    os.environ.get("PG_BIN", ""),
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
]


# Ends every other session of ours, as a database restart or a failover does, and counts
# them. With a timeout, pg_terminate_backend waits until each backend is gone.
TERMINATE_OUR_OTHER_SESSIONS = (
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
    "WHERE application_name = 'boxoffice' AND pid <> pg_backend_pid()"
)


def pg_bin() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL binaries not found: set PG_BIN to the folder holding initdb")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_postgres(cmd: list[str]) -> list[str]:
    """`cmd` as the `postgres` user when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def reachable_by_postgres(root: Path) -> None:
    """As root, hand `root` to the `postgres` user and let it through every folder above."""
    if os.geteuid() != 0:
        return
    root.chmod(0o755)
    for parent in root.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
    shutil.chown(root, "postgres", "postgres")


def cluster_user() -> str:
    """The superuser a throwaway cluster is made with: the user it runs as."""
    return "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")


def initdb(data: Path, user: str) -> None:
    """A new cluster in `data` (trust authentication: for throwaway loopback clusters only)."""
    subprocess.run(
        as_postgres(
            [
                str(pg_bin() / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                user,
                "-E",
                "UTF8",
                "--no-locale",
            ]
        ),
        check=True,
        capture_output=True,
    )


def psql(port: int, sql: str, *, user: str, database: str) -> str:
    """Run `sql` on 127.0.0.1:`port`; its rows, unaligned, one a line."""
    result = subprocess.run(
        [
            str(pg_bin() / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            user,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def pg_ctl_stop(data: Path, *, timeout: float | None = None) -> None:
    """Stop the cluster in `data` as a crash would (immediate shutdown), its data kept."""
    subprocess.run(
        as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
        check=True,
        capture_output=True,
        timeout=timeout,
    )


def pg_ctl_start(data: Path, log: Path) -> None:
    """Start the cluster in `data`, waiting up to a minute for it to accept connections."""
    subprocess.run(
        as_postgres(
            [str(pg_bin() / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]
        ),
        check=True,
        capture_output=True,
    )


class ThrowawayPostgres:
    """initdb + pg_ctl start on 127.0.0.1:<free port>; `stop()` removes everything."""

    def __init__(self, *, extra_conf: dict[str, str] | None = None) -> None:
        self.bin = pg_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="boxoffice-pg-"))
        self.data = self.root / "data"
        self.extra_conf = extra_conf or {}
        self.user = cluster_user()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> ThrowawayPostgres:
        reachable_by_postgres(self.root)
        initdb(self.data, self.user)
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "200",
            "fsync": "on",
            "shared_buffers": "128MB",
            **self.extra_conf,
        }
        with (self.data / "postgresql.conf").open("a") as handle:
            handle.writelines(f"{key} = {value}\n" for key, value in conf.items())
        self.resume()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start")

    def psql(self, sql: str, database: str = "postgres") -> str:
        return psql(self.port, sql, user=self.user, database=database)

    def halt(self) -> None:
        """Stop the server as a crash would (immediate shutdown), keeping its data."""
        pg_ctl_stop(self.data)

    def resume(self) -> None:
        """Start the server on its data folder and port: the first time, or again after
        `halt()` (then after crash recovery)."""
        pg_ctl_start(self.data, self.root / "log")
        self._wait_ready()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, *, wait_for_removal: bool = True) -> None:
        """Stop the server and remove its folder; without `wait_for_removal`, a detached `rm`
        removes it (a suite's hundreds of databases are tens of thousands of files, and
        unlinking them took the suite's last 20-30 s)."""
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            pg_ctl_stop(self.data)
        if wait_for_removal:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            subprocess.Popen(
                ["rm", "-rf", "--", str(self.root)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )


@contextlib.contextmanager
def throwaway_postgres(**kwargs: dict[str, str]) -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres(**kwargs).start()
    try:
        yield cluster
    finally:
        cluster.stop()
