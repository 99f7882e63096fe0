"""A throwaway pgbouncer in transaction pooling mode, in front of a throwaway PostgreSQL.

It listens on a free loopback port and passes every database of the cluster
through (`* = host=… port=…`), so `url(name)` is the cluster's URL for `name`
with only the port changed. `pool_mode = transaction` with a small
`default_pool_size`: each transaction borrows one of a few server connections
and gives it back at COMMIT, so many clients really share them, which is what
breaks named prepared statements and session settings.

pgbouncer refuses to run as root, so as root it runs as the `postgres` user,
like the cluster; its folder is made reachable as the cluster's is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.postgres import ThrowawayPostgres, free_port

PGBOUNCER = "/usr/sbin/pgbouncer"


def pgbouncer_bin() -> str:
    found = shutil.which("pgbouncer") or (PGBOUNCER if Path(PGBOUNCER).exists() else None)
    if found is None:
        raise RuntimeError("pgbouncer not found: `make test-tools` installs Debian's package")
    return found


def pgbouncer_version() -> tuple[int, int]:
    """(major, minor) of the installed pgbouncer, e.g. (1, 18)."""
    out = subprocess.run(
        [pgbouncer_bin(), "--version"], check=True, capture_output=True, text=True
    ).stdout
    major, minor = out.split()[1].split(".")[:2]  # "PgBouncer 1.18.0"
    return int(major), int(minor)


class ThrowawayPgbouncer:
    """pgbouncer on 127.0.0.1:<free port> in front of `cluster`; `stop()` removes everything."""

    def __init__(
        self,
        cluster: ThrowawayPostgres,
        *,
        pool_mode: str = "transaction",
        default_pool_size: int = 4,
        extra_conf: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="boxoffice-pgbouncer-"))
        self.pool_mode = pool_mode
        self.default_pool_size = default_pool_size
        self.extra_conf = extra_conf or {}
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.cluster.user}@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.root / "pgbouncer.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> ThrowawayPgbouncer:
        (self.root / "userlist.txt").write_text(f'"{self.cluster.user}" ""\n')
        conf = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",  # loopback TCP only: no socket in /var/run/postgresql
            "auth_type": "trust",  # like the cluster (initdb -A trust); the user must be listed
            "auth_file": str(self.root / "userlist.txt"),
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.default_pool_size),
            "max_client_conn": "1000",
            "logfile": str(self.log_path),
            "pidfile": str(self.root / "pgbouncer.pid"),
            "admin_users": self.cluster.user,
            **self.extra_conf,
        }
        lines = [
            "[databases]",
            f"* = host=127.0.0.1 port={self.cluster.port}",
            "[pgbouncer]",
            *(f"{key} = {value}" for key, value in conf.items()),
        ]
        ini = self.root / "pgbouncer.ini"
        ini.write_text("\n".join(lines) + "\n")
        command = [pgbouncer_bin(), str(ini)]
        if os.geteuid() == 0:
            self.root.chmod(0o755)
            for parent in self.root.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, "postgres", "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        # A session of its own: stop() signals runuser and pgbouncer together.
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited early:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not start:\n{self.log()}")

    def admin(self, command: str) -> str:
        """A command on pgbouncer's admin console (`SHOW POOLS`, say), as psql prints it."""
        result = subprocess.run(
            [
                str(self.cluster.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.cluster.user,
                "-d",
                "pgbouncer",
                "-Atc",
                command,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # SIGTERM: pgbouncer's immediate stop
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
