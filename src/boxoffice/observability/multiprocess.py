"""Where several worker processes' metrics meet: prometheus-client's multiprocess directory.

    boxoffice serve --workers N ──> PROMETHEUS_MULTIPROC_DIR (a fresh temporary folder,
           │                         or the operator's, wiped of old metrics), set before
           │                         any worker starts; removed at exit if it was ours
           ├── worker 1 ──> counter_<pid>.db, histogram_<pid>.db, gauge_<mode>_<pid>.db
           └── worker 2 ──> …            GET /metrics on any worker reads them all

prometheus-client picks its kind of values when it is first imported: with
the variable set, every value lives in a memory-mapped file of its process,
and a scrape adds up (or takes the min, max or latest of) every process's
files. Counts of a worker that exited stay in the sum, as a counter must;
its live gauges (`live*` modes) are removed when it exits, by itself at
shutdown or by the supervisor when it died (`forget_process`).

One process (`--workers 1`, the default) keeps its metrics in memory and
needs no folder, unless the operator sets one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ENV = "PROMETHEUS_MULTIPROC_DIR"

# As this process found it when it started, which is when prometheus-client chose to keep
# its values in memory or in files.
DIRECTORY: str | None = os.environ.get(ENV) or None

# prometheus-client's files, and nothing else a shared folder might hold.
_METRIC_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


@contextlib.contextmanager
def metrics_directory(workers: int) -> Iterator[Path | None]:
    """For `boxoffice serve`: the folder its workers share, ready before any of them starts.

    The operator's PROMETHEUS_MULTIPROC_DIR if set (made if missing, its old metric
    files removed: counts of an earlier run must not add to this one's); else, with
    several workers, a fresh temporary folder, removed when the server stops; else none.
    """
    given = os.environ.get(ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        wipe(path)
        yield path
        return
    if workers == 1:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="boxoffice-metrics-"))
    os.environ[ENV] = str(path)  # the workers inherit it
    try:
        yield path
    finally:
        del os.environ[ENV]
        shutil.rmtree(path, ignore_errors=True)


def wipe(path: Path) -> None:
    """Remove the metric files (and turn files) of earlier runs from `path`."""
    for entry in path.iterdir():
        if _METRIC_FILE.fullmatch(entry.name) or entry.suffix == ".turn":
            entry.unlink(missing_ok=True)


def forget_process(pid: int) -> None:
    """A worker has exited: its live gauges no longer count (its counters still do)."""
    path = os.environ.get(ENV)
    if path:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def render() -> bytes:
    """Every metric in Prometheus' text format: every worker's, or this process's own."""
    if DIRECTORY is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=DIRECTORY)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def take_turn(name: str, every_seconds: float) -> bool:
    """Whether this process should do `name`'s periodic work now.

    With several workers, one of them per `every_seconds` or so, whichever asks first
    (a timestamp in a file of the shared folder, under a lock); alone, always.
    """
    if DIRECTORY is None:
        return True
    fd = os.open(Path(DIRECTORY) / f"{name}.turn", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another worker is taking it right now
        try:
            last = float(os.read(fd, 32) or 0)
        except ValueError:
            last = 0.0
        now = time.time()
        # A little early is fine: the workers' timers drift apart, and waiting for a full
        # interval could skip every other one.
        if now - last < every_seconds * 0.8:
            return False
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, repr(now).encode())
        return True
    finally:
        os.close(fd)  # and the lock with it
