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
- `job(engine, gate)` is the whole transaction (see
  `services/unit_of_work.write_in_one_hop`); just before COMMIT it asks
  `gate.allows(result)`. The process pickles the result there, so a result
  that could not be sent back rolls the transaction back instead of being
  committed and then reported as a failure. If the caller is cancelled, an
  "abandon" message follows the job, and `allows` sees it and says no; the
  caller waits for the reply either way (however often it is cancelled), so
  no other write of this process overlaps the abandoned one.
- If the process dies, the job in flight fails with `DatabaseUnavailable`
  (SQLite rolls back a transaction whose process died) and the next job
  starts a new process. Only a death between its COMMIT and its reply leaves
  the batch written though answered 503, as a connection lost during COMMIT
  does on any database.
- Jobs and results cross the pipe with pickle, which is safe here: both
  ends are this program, over a socket pair no one else holds.

`SQLITE_WRITER=thread` keeps the writer on a thread of the server process
instead (no extra process; tests that inject failures in-process use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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

HEADER = struct.Struct("!I")


class CommitGate(Protocol):
    """Asked by a job just before COMMIT, with the result it is about to return."""

    def allows(self, result: object) -> bool:
        """False if the caller went away (roll back); raises if `result` cannot reach it."""
        ...


Job = Callable[[Engine, CommitGate], T]


class _ThreadGate:
    def __init__(self) -> None:
        self.abandoned = threading.Event()

    def allows(self, result: object) -> bool:
        return not self.abandoned.is_set()


async def _wait_out(future: asyncio.Future[Any]) -> None:
    """Wait until `future` is done, however often we are cancelled meanwhile.

    A job that has started cannot be interrupted; until it ends, the caller keeps
    the write lock, so no other write of this process overlaps it.
    """
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([future])  # never cancels `future`, never raises its error
    if not future.cancelled():
        future.exception()  # retrieved: the caller is answered by its cancellation


class ThreadWriter:
    """Runs jobs on one thread of this process, with a blocking pysqlite engine."""

    def __init__(self, engine_factory: Callable[[], Engine]) -> None:
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise DatabaseUnavailable("the SQLite writer has been closed")
        if self._thread is None:
            self._engine = self._engine_factory()
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="boxoffice-writer")

    async def run(self, job: Job[T]) -> T:
        await self.start()
        assert self._thread is not None
        assert self._engine is not None
        gate = _ThreadGate()
        done = asyncio.get_running_loop().run_in_executor(self._thread, job, self._engine, gate)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            gate.abandoned.set()
            await _wait_out(done)
            raise

    async def close(self) -> None:
        self._closed = True
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
        self._closed = False

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the process, unless it runs; return once it has opened the database."""
        if self._running():
            return
        async with self._starting:
            if self._closed:
                raise DatabaseUnavailable("the SQLite writer has been closed")
            if not self._running():
                await self._spawn()

    def _running(self) -> bool:
        # A process that died between jobs may not be reaped yet; its pipe tells.
        return (
            self._process is not None
            and self._process.returncode is None
            and self._reader is not None
            and not self._reader.at_eof()
        )

    async def _spawn(self) -> None:
        await self._forget_process()
        ours, theirs = socket.socketpair()
        try:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-P",  # not the working directory first: our own import path, below
                    "-m",
                    __name__,
                    str(theirs.fileno()),
                    self._url,
                    str(self._timeout),
                    pass_fds=(theirs.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": our_import_path()},
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
            await _wait_out(reply)
            raise
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    async def close(self) -> None:
        """Stop the process: closing the pipe tells it to. For good: no job starts it again.

        `Database.dispose` holds the write lock meanwhile, so no job is running.
        """
        self._closed = True
        await self._forget_process(grace=STOP_TIMEOUT_SECONDS)

    async def _reply(self, sequence: int) -> tuple[bool, Any]:
        try:
            answered, ok, value = await self._receive()
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            await self._forget_process()
            raise DatabaseUnavailable("the SQLite writer process stopped") from error
        except Exception as error:  # a reply we cannot read: never retried as unwritten
            await self._forget_process()
            raise DatabaseUnavailable(
                f"unreadable reply from the SQLite writer: {error}"
            ) from error
        if answered != sequence:  # cannot happen while one job runs at a time
            await self._forget_process()
            raise DatabaseUnavailable("the SQLite writer process lost track of its jobs")
        return ok, value

    def _send(self, message: tuple[str, int, object]) -> None:
        if self._writer is None:
            raise DatabaseUnavailable("the SQLite writer process is not running")
        payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        self._writer.write(HEADER.pack(len(payload)) + payload)

    async def _receive(self) -> Any:
        assert self._reader is not None
        (size,) = HEADER.unpack(await self._reader.readexactly(HEADER.size))
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


def our_import_path() -> str:
    """This process's `sys.path`, for the writer to import the very same code."""
    return os.pathsep.join(entry or os.getcwd() for entry in sys.path)


# The child process ------------------------------------------------------------


class _ProcessGate:
    """The gate as the child sees it: the result pickled, and no "abandon" for this job."""

    def __init__(self, sock: socket.socket, sequence: int) -> None:
        self._sock = sock
        self._sequence = sequence
        self._abandoned = False
        self.reply: bytes | None = None

    def allows(self, result: object) -> bool:
        self.reply = pack_message((self._sequence, True, result))  # raises before COMMIT
        while not self._abandoned and select.select([self._sock], [], [], 0)[0]:
            message = _receive_blocking(self._sock)
            # The parent gone, or gave up on this job: nobody would hear of its commit.
            self._abandoned = message is None or message[:2] == ("abandon", self._sequence)
        return not self._abandoned


def _receive_blocking(sock: socket.socket) -> Any:
    header = _read_exactly(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
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


def pack_message(message: object) -> bytes:
    """`message` as it crosses a socket between this program's processes: its pickle's
    length, then its pickle (the shared committer's link uses it too)."""
    payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def _send_error(sock: socket.socket, sequence: int, error: Exception) -> None:
    try:
        frame = pack_message((sequence, False, error))
    except Exception:  # an exception that won't pickle: its name and message will
        frame = pack_message((sequence, False, RuntimeError(f"{type(error).__name__}: {error}")))
    sock.sendall(frame)


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
        gc.freeze()
        sock.sendall(pack_message(("ready", None)))
    except Exception as error:
        with contextlib.suppress(ConnectionError):
            sock.sendall(pack_message(("failed", f"{type(error).__name__}: {error}")))
        return
    try:
        while (message := _receive_blocking(sock)) is not None:
            kind, sequence, job = message
            if kind != "job":
                continue  # an "abandon" for a job that had already finished
            gate = _ProcessGate(sock, sequence)
            try:
                result = pickle.loads(job)(engine, gate)
                # A job that never asked the gate (no transaction) is pickled now.
                sock.sendall(gate.reply or pack_message((sequence, True, result)))
            except ConnectionError:
                raise
            except Exception as error:
                _send_error(sock, sequence, _portable(error))
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
    # Keep nothing of the server's but our pipe. uvloop starts subprocesses without
    # closing inherited descriptors, so we would otherwise hold the server's listening
    # socket: after a SIGTERM the kernel would keep accepting connections into it that
    # nobody serves (tests/e2e/test_graceful_shutdown.py).
    os.closerange(3, int(fd))
    os.closerange(int(fd) + 1, os.sysconf("SC_OPEN_MAX"))
    serve(socket.socket(fileno=int(fd)), url, float(timeout_seconds))


if __name__ == "__main__":
    main()
