"""Real server processes for end-to-end tests: `boxoffice serve` in a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.keys import key_material_in
from tests.support.postgres import free_port


def processes(where: Callable[[Path], bool]) -> list[int]:
    """The pids of the running processes whose /proc entry satisfies `where`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if where(entry):
                    found.append(int(entry.name))
    return found


def process_group(pgid: int) -> list[int]:
    """The server and its workers: it is started in a session of its own."""
    return processes(
        lambda entry: int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid
    )


def committer_processes(pgid: int) -> list[int]:
    """The server's shared committer process, if it runs one (BOOKING_COMMITTER=process)."""
    found = []
    for pid in process_group(pgid):
        with contextlib.suppress(OSError):  # it may have exited since it was listed
            if b"boxoffice.booking.committer_process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


class ServerProcess:
    """`boxoffice serve --workers N` on a free port, against `database_url`."""

    def __init__(
        self,
        database_url: str,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        asgi_factory: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.workers = workers
        self.port = free_port()
        self.extra_env = env or {}
        self.log_path = (log_dir or Path("/tmp")) / f"boxoffice-server-{self.port}.log"
        self.asgi_factory = asgi_factory  # serve another app factory with plain uvicorn
        self.cwd = cwd  # where the server runs (an older checkout, for the benchmark)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.asgi_factory:
            return [
                sys.executable,
                "-m",
                "uvicorn",
                self.asgi_factory,
                "--factory",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        return [
            sys.executable,
            "-m",
            "boxoffice",
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-access-log",
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "LOG_LEVEL": "WARNING",
            # These servers are for crashes, races and processes; who may do what is
            # tested in-process (tests/api/test_access.py) and, with keys on, by
            # tests/e2e/test_access_processes.py, which sets this to false.
            "BOXOFFICE_OPEN_ACCESS": "true",
            # Crash and race tests send thousands of requests from one address; rate
            # limits are tested by tests/api/test_rate_limits.py and, across processes,
            # by tests/e2e/test_rate_limits_redis.py.
            "RATE_LIMITS_ENABLED": "false",
            # And backpressure: on two shared cores running the suite, a batch can wait past
            # the default 1 s and its requests be answered 503 overloaded, which these
            # tests would take for a failure. It is tested by tests/api/test_unavailable.py.
            "BOOKING_QUEUE_TIMEOUT_MS": "15000",
            **self.extra_env,
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.cwd,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    # With several workers, let every one of them start accepting.
                    time.sleep(0.5 if self.workers > 1 else 0)
                    return self
            time.sleep(0.1)
        self._stop()
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group: the crash a power cut or OOM killer causes."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then check that nothing the server logged carries a key's secret."""
        self._stop()
        leaked = key_material_in(self.log())
        assert not leaked, f"the server logged key material: {leaked} ({self.log_path})"

    def _stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def audit_verify(database_url: str) -> subprocess.CompletedProcess[str]:
    """`boxoffice audit verify` on `database_url`, as an operator runs it."""
    return _boxoffice(database_url, "audit", "verify")


def inventory_check(
    database_url: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`boxoffice check` on `database_url` (and settings `env`), as an operator runs it."""
    return _boxoffice(database_url, "check", env=env)


def _boxoffice(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boxoffice", *args],
        env={**os.environ, "DATABASE_URL": database_url, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
