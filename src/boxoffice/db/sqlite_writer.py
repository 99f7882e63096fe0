"""SQLite's writer: where the group-commit committer's blocking transactions run.

SQLite works inside the server's own process. Run on a thread, its Python
half (SQLAlchemy, the batch's decisions) competes with the event loop for the
GIL, and the loop's HTTP work slows down by about half (measured, see
docs/performance.md). So by default the writer is a *process* of its own,
as PostgreSQL's backends are:

    event loop ──(job: pickled function + arguments)──> writer process
               <──(its result, or the exception it raised)──

- One job at a time: the caller holds the database's asyncio write lock, so
  the process needs no queue and each reply answers the job just sent.
- `job(engine, abandoned)` is the whole transaction (see
  `services/unit_of_work.write_in_one_hop`). If the caller is cancelled, an
  "abandon" message follows the job, and `abandoned.is_set()`, asked just
  before COMMIT, sees it; the caller waits for the reply either way, so no
  other write of this process overlaps the abandoned one.
- If the process dies, the job in flight fails with `DatabaseUnavailable`
  (SQLite rolls back a transaction whose process died) and the next job
  starts a new process.
- Jobs and results cross the pipe with pickle, which is safe here: both
  ends are this program, over a socket pair no one else holds.

`SQLITE_WRITER=thread` keeps the writer on a thread of the server process
instead (no extra process; tests that inject failures in-process use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import select
import socket
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from boxoffice.db.errors import DatabaseUnavailable, is_unavailable

T = TypeVar("T")

WriterKind = Literal["process", "thread"]
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0

_HEADER = struct.Struct("!I")


class Abandoned(Protocol):
    """Tells a running job whether its caller has gone away (it then rolls back)."""

    def is_set(self) -> bool: ...


Job = Callable[[Engine, Abandoned], T]


class ThreadWriter:
    """Runs jobs on one thread of this process, with a blocking pysqlite engine."""

    def __init__(self, engine_factory: Callable[[], Engine]) -> None:
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._thread is None:
            self._engine = self._engine_factory()
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="boxoffice-writer")

    async def run(self, job: Job[T]) -> T:
        await self.start()
        assert self._thread is not None
        assert self._engine is not None
        abandoned = threading.Event()
        done = asyncio.get_running_loop().run_in_executor(
            self._thread, job, self._engine, abandoned
        )
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            abandoned.set()
            with contextlib.suppress(Exception):
                await done
            raise

    async def close(self) -> None:
        if self._thread is not None:
            # Lets a job still running there (its caller cancelled) finish first.
            await asyncio.to_thread(self._thread.shutdown)
            self._thread = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class ProcessWriter:
    """Runs jobs in a child process that holds the blocking pysqlite engine."""

    def __init__(self, url: URL, timeout_seconds: float) -> None:
        self._url = url.render_as_string(hide_password=False)
        self._timeout = timeout_seconds
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sequence = 0
        self._starting = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the process, unless it runs; return once it has opened the database."""
        if self._process is not None and self._process.returncode is None:
            return
        async with self._starting:
            if self._process is None or self._process.returncode is not None:
                await self._spawn()

    async def _spawn(self) -> None:
        await self._forget_process()
        ours, theirs = socket.socketpair()
        try:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    __name__,
                    str(theirs.fileno()),
                    self._url,
                    str(self._timeout),
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                )
            finally:
                theirs.close()
            self._reader, self._writer = await asyncio.open_connection(sock=ours)
            kind, detail = await asyncio.wait_for(self._receive(), START_TIMEOUT_SECONDS)
        except BaseException as error:
            # Half started (or cancelled meanwhile): never leave a process whose
            # "ready" would be taken for a job's reply.
            ours.close()
            await self._forget_process()
            if isinstance(error, asyncio.IncompleteReadError | TimeoutError | OSError):
                raise DatabaseUnavailable("the SQLite writer process did not start") from error
            raise
        if kind != "ready":
            await self._forget_process()
            raise DatabaseUnavailable(f"the SQLite writer process could not start: {detail}")

    async def run(self, job: Job[T]) -> T:
        await self.start()
        self._sequence += 1
        sequence = self._sequence
        # Pickled on its own, so that a job the writer cannot load is answered, not fatal.
        self._send(("job", sequence, pickle.dumps(job, pickle.HIGHEST_PROTOCOL)))
        reply = asyncio.ensure_future(self._reply(sequence))
        try:
            ok, value = await asyncio.shield(reply)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self._send(("abandon", sequence, None))
            with contextlib.suppress(Exception):
                await reply
            raise
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    async def close(self) -> None:
        """Let the process finish its job, then stop it (closing the pipe tells it to)."""
        await self._forget_process(grace=STOP_TIMEOUT_SECONDS)

    async def _reply(self, sequence: int) -> tuple[bool, Any]:
        try:
            answered, ok, value = await self._receive()
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            await self._forget_process()
            raise DatabaseUnavailable("the SQLite writer process stopped") from error
        if answered != sequence:  # cannot happen while one job runs at a time
            await self._forget_process()
            raise DatabaseUnavailable("the SQLite writer process lost track of its jobs")
        return ok, value

    def _send(self, message: tuple[str, int, object]) -> None:
        if self._writer is None:
            raise DatabaseUnavailable("the SQLite writer process is not running")
        payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        self._writer.write(_HEADER.pack(len(payload)) + payload)

    async def _receive(self) -> Any:
        assert self._reader is not None
        (size,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
        return pickle.loads(await self._reader.readexactly(size))

    async def _forget_process(self, *, grace: float = 0.0) -> None:
        process, writer = self._process, self._writer
        self._process = self._reader = self._writer = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


Writer = ThreadWriter | ProcessWriter


# The child process ------------------------------------------------------------


class _AbandonMessage:
    """`abandoned` as the child sees it: has the parent sent "abandon" for this job?"""

    def __init__(self, sock: socket.socket, sequence: int) -> None:
        self._sock = sock
        self._sequence = sequence
        self._set = False

    def is_set(self) -> bool:
        while not self._set and select.select([self._sock], [], [], 0)[0]:
            message = _receive_blocking(self._sock)
            # The parent gone, or gave up on this job: nobody would hear of its commit.
            self._set = message is None or message[:2] == ("abandon", self._sequence)
        return self._set


def _receive_blocking(sock: socket.socket) -> Any:
    header = _read_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    payload = _read_exactly(sock, size)
    return None if payload is None else pickle.loads(payload)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    read = 0
    while read < size:
        count = sock.recv_into(view[read:])
        if count == 0:
            return None
        read += count
    return bytes(buffer)


def _send_blocking(sock: socket.socket, message: object) -> None:
    payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _send_reply(sock: socket.socket, sequence: int, ok: bool, value: object) -> None:
    try:
        _send_blocking(sock, (sequence, ok, value))
    except (pickle.PicklingError, TypeError, AttributeError):  # an exception that won't pickle
        _send_blocking(sock, (sequence, False, RuntimeError(f"{type(value).__name__}: {value}")))


def _portable(error: Exception) -> Exception:
    """The exception as the parent should see it; unavailability keeps its meaning."""
    if is_unavailable(error):
        return DatabaseUnavailable(str(error))
    return error


def serve(sock: socket.socket, url: str, timeout_seconds: float) -> None:
    """The child's loop: open the database, then run each job it is sent until EOF."""
    import gc

    from sqlalchemy import make_url

    from boxoffice.db.database import sqlite_blocking_engine

    try:
        engine = sqlite_blocking_engine(make_url(url), timeout_seconds)
        with engine.connect():
            pass  # opens the file and applies the pragmas: fail here, not on a booking
    except Exception as error:
        _send_blocking(sock, ("failed", f"{type(error).__name__}: {error}"))
        return
    gc.freeze()
    _send_blocking(sock, ("ready", None))
    try:
        while (message := _receive_blocking(sock)) is not None:
            kind, sequence, job = message
            if kind != "job":
                continue  # an "abandon" for a job that had already finished
            try:
                result = pickle.loads(job)(engine, _AbandonMessage(sock, sequence))
            except Exception as error:
                _send_reply(sock, sequence, False, _portable(error))
            else:
                _send_reply(sock, sequence, True, result)
    except ConnectionError:
        pass  # the server went away while we answered; there is no one left to tell
    finally:
        engine.dispose()


def main() -> None:
    import signal

    # Ctrl-C and a service manager's SIGTERM reach the whole process group; the
    # server decides when we stop: it closes the pipe once its last batch is done.
    # If the server dies instead, the pipe closes too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, url, timeout_seconds = sys.argv[1:4]
    serve(socket.socket(fileno=int(fd)), url, float(timeout_seconds))


if __name__ == "__main__":
    main()
