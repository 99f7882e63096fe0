"""Running the server: one process, or several workers that stop accepting together.

uvicorn's supervisor of several workers keeps its own copy of the listening
socket open until every worker has drained and exited. While they drain after
a SIGTERM, the kernel keeps completing handshakes on that copy, and those
clients wait for nothing until the supervisor exits and their connections are
reset. `Supervisor` closes its copy first, so that once the workers close
theirs (the first thing each does on SIGTERM) new connections are refused at
once and a load balancer moves on, while requests in flight finish within
SHUTDOWN_GRACE_SECONDS (uvicorn's `timeout_graceful_shutdown`).

When a worker dies and uvicorn starts another, the dead one's live gauges are
removed from the metrics (a worker that stops normally removes its own). The
shared committer process (PostgreSQL, booking/committer_process.py) is watched
on the same tick and started again if it died.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import uvicorn
from uvicorn.supervisors import Multiprocess

from boxoffice.booking.committer_process import CommitterProcess
from boxoffice.observability.multiprocess import forget_process

STARTUP_FAILURE = 3  # uvicorn's own exit code when the app could not start


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, which lets go of the listening socket on SIGTERM/SIGINT,
    and keeps the shared committer alive."""

    committer: CommitterProcess | None = None

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def keep_subprocess_alive(self) -> None:
        if self.committer is not None and not self.should_exit.is_set():
            self.committer.keep_alive()
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                forget_process(pid)

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


class _Server(uvicorn.Server):
    """uvicorn's server, which counts a stop on SIGTERM or SIGINT as a success (exit 0).

    uvicorn raises the signal again once it has shut down, so the process ends as
    "killed by SIGTERM" (143) even after a clean drain; a process manager would
    record every deploy as a failure.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def run(config: uvicorn.Config, committer: CommitterProcess | None = None) -> None:
    """Serve `config` until SIGTERM or SIGINT, then drain and return."""
    if config.workers > 1:
        supervisor = Supervisor(config, sockets=[config.bind_socket()])
        supervisor.committer = committer
        supervisor.run()
        return
    server = _Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
