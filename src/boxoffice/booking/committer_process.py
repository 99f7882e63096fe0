"""PostgreSQL's shared committer: one process runs the group commit for all of a server's workers.

    worker ──(command)──┐
    worker ──(command)──┼──> committer process: BatchedBooker ──> PostgreSQL
    worker ──(command)──┘          <──(its result, or the error it raised)

Why: a worker's event loop is busy with HTTP. Each of a batch's round trips
waits for a pass over every busy connection of that loop, and a locked batch
holds its sections' rows across all of them, so the other workers' batches
wait on those locks too (docs/performance.md, "A committer process shared by
the workers"). A process whose loop serves only batches makes its round trips
cost what PostgreSQL takes, and one committer per server means its workers'
batches no longer wait on each other's row locks (two servers on one database
still do: the database arbitrates, as between any two processes).

- `boxoffice serve --workers N` (N > 1) on PostgreSQL with
  BOOKING_COMMITTER=process starts it before the workers and stops it after they
  have drained; the workers find its socket in BOXOFFICE_COMMITTER_SOCKET.
- Commands and answers cross a Unix socket in a private folder as
  length-prefixed pickles: both ends are this program, and the folder is
  readable by its user only.
- A caller that goes away (its client disconnected) sends "abandon": the
  committer skips the command if its batch has not started, as in one process.
- If the committer dies, commands in flight are answered 503 (whether a batch
  under way was committed is then unknown, as with a connection lost during
  COMMIT; idempotency keys make the retry safe), `/readyz` says not ready, the
  server's supervisor starts another within a second (backing off while it
  keeps failing to start), and the workers connect to it again by themselves.
- Each answer carries the events its command wrote to: the worker drops its
  cached availability of them before answering (`services/availability.py`).
- The committer ignores SIGINT, SIGTERM and SIGHUP (they reach the whole process
  group): the server stops it by closing its stdin once the workers are done,
  and a server that dies closes it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import structlog

from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.db.sqlite_writer import HEADER, our_import_path, pack_message
from boxoffice.domain.commands import Book, Command, PlaceHold, events_named
from boxoffice.domain.decisions import Result
from boxoffice.observability.multiprocess import forget_process

if TYPE_CHECKING:
    from boxoffice.booking.batched import BatchedBooker

log = structlog.get_logger("boxoffice.booking")

SOCKET_ENV = "BOXOFFICE_COMMITTER_SOCKET"  # set by `boxoffice serve` for its workers
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0  # the committer's own stop waits up to 10 s for its batches
RECONNECT_SECONDS = (0.05, 1.0)  # a worker's first retry, and the longest wait between two
RESTART_SECONDS = (0.5, 30.0)  # the supervisor's first restart, and the longest wait between two
MAX_SOCKET_PATH = 107  # sun_path's 108 bytes, with its terminating zero
FLUSH_SECONDS = 1.0  # the committer's metrics reach the shared folder this often
# Its connections: the group commit keeps 2 writers; reads of a confirm's or cancel's event
# (events_of.py) take a reader now and then. The workers' pools keep DB_POOL_SIZE each.
POOL_SIZE = 6

_COMMAND, _ABANDON = "command", "abandon"


async def _messages(reader: asyncio.StreamReader) -> AsyncIterator[Any]:
    """Every message the other end sends, until it closes: whatever arrived in one read is
    taken in one go (under load a read brings many)."""
    buffer = bytearray()
    while data := await reader.read(1 << 16):
        buffer += data
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if end > len(buffer):
                break
            yield pickle.loads(memoryview(buffer)[start + HEADER.size : end])
            start = end
        del buffer[:start]


class _Outbox:
    """Frames for one link, written together once per loop pass: one system call for
    every command (or answer) of that pass, not one each."""

    __slots__ = ("_frames", "_writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        """Queue `frame`; raises if the link is closed (nothing of it will be sent)."""
        if self._writer.is_closing():
            raise ConnectionResetError("the link is closed")
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(frame)

    def _flush(self) -> None:
        frames, self._frames = self._frames, []
        if not self._writer.is_closing():
            self._writer.write(b"".join(frames))


def _error_frame(sequence: int, error: BaseException, events: tuple[str, ...]) -> bytes:
    try:
        payload = pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
        pickle.loads(payload)  # some pickle, then refuse to unpickle (a differently shaped
        # constructor); the worker would lose the link over it
    except Exception:  # its name and message will do: it is a bug's, answered 500
        error = RuntimeError(f"{type(error).__name__}: {error}")
    return pack_message((sequence, False, error, events))


# A worker's side -----------------------------------------------------------------------


class RemoteBooker:
    """A worker's booker: each command goes to the shared committer, and its answer back."""

    def __init__(
        self,
        path: str,
        *,
        max_tickets_per_booking: int,
        on_written: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self._path = path
        self._max_tickets = max_tickets_per_booking
        self._on_written = on_written
        self._outbox: _Outbox | None = None
        self._link: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[Result]] = {}
        self._sequence = 0

    async def start(self) -> None:
        """Connect (waiting up to START_TIMEOUT_SECONDS), then keep connected until stop."""
        if self._link is None:
            self._link = asyncio.create_task(self._keep_linked(), name="boxoffice-committer-link")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                await self._connected.wait()
        if not self._connected.is_set():
            log.error("committer_unreachable", socket=self._path)

    @property
    def ready(self) -> bool:
        """Connected to the committer: commands submitted now will be committed."""
        return self._outbox is not None

    async def stop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link
        self._fail(DatabaseUnavailable("the server is shutting down"))

    async def submit(self, command: Command) -> Result:
        """Apply `command` atomically through the committer; raise and change nothing."""
        if isinstance(command, Book | PlaceHold):
            command.check_quantity(self._max_tickets)
        outbox = self._outbox
        self._sequence += 1
        sequence = self._sequence
        try:
            if outbox is None:  # lost, and not yet found again
                raise ConnectionResetError("no link")
            outbox.send(pack_message((_COMMAND, sequence, command)))
        except (RuntimeError, OSError) as error:  # nothing was sent
            raise DatabaseUnavailable("the booking committer is not running") from error
        answer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting[sequence] = answer
        try:
            return await answer
        except asyncio.CancelledError:
            # Not answered yet: the committer skips it unless its batch has started.
            if self._waiting.pop(sequence, None) is not None:
                with contextlib.suppress(OSError):
                    outbox.send(pack_message((_ABANDON, sequence, None)))
            raise

    async def _keep_linked(self) -> None:
        delay = RECONNECT_SECONDS[0]
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self._path)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_SECONDS[1])
                continue
            delay = RECONNECT_SECONDS[0]
            self._outbox = _Outbox(writer)
            self._connected.set()
            try:
                await self._listen(reader)
            except Exception:  # a message it could not read: a bug; the link starts afresh
                log.exception("committer_link_failed", socket=self._path)
            finally:
                self._outbox = None
                self._connected.clear()
                writer.close()
                self._fail(DatabaseUnavailable("the booking committer has stopped"))
            log.error("committer_link_lost", socket=self._path)

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        waiting = self._waiting
        with contextlib.suppress(ConnectionError):
            async for sequence, ok, value, events in _messages(reader):
                if events and self._on_written is not None:  # before anyone is answered
                    self._on_written(events)
                answer = waiting.pop(sequence, None)
                if answer is None or answer.done():
                    continue  # abandoned
                if ok:
                    answer.set_result(value)
                else:
                    answer.set_exception(value)

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(error)


# The server's side: starting and restarting the process ----------------------------------


class CommitterProcess:
    """The committer as `boxoffice serve` runs it: started first, kept alive, stopped last."""

    def __init__(self) -> None:
        self._folder = tempfile.mkdtemp(prefix="boxoffice-committer-")  # mode 0700
        self.path = os.path.join(self._folder, "committer.sock")
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise RuntimeError(
                f"the committer's socket path {self.path!r} is longer than a Unix socket's "
                f"{MAX_SOCKET_PATH} bytes: set TMPDIR to a shorter folder"
            )
        self._process: subprocess.Popen[str] | None = None
        self._restart_delay = RESTART_SECONDS[0]
        self._restart_at = 0.0

    def start(self) -> None:
        """Start the process and wait until it listens; raise if it could not."""
        process = subprocess.Popen(
            # -P: not the working directory first, but this server's own import path.
            [sys.executable, "-P", "-m", "boxoffice.booking.committer_process", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": our_import_path()},
        )
        assert process.stdout is not None
        ready = select.select([process.stdout], [], [], START_TIMEOUT_SECONDS)[0]
        if not ready or process.stdout.readline().strip() != "ready":
            self._end(process)
            raise RuntimeError("the booking committer process did not start")
        self._process = process

    def keep_alive(self) -> None:
        """Called by the server's supervisor every half second: start it again if it died."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                return
            log.error("committer_died", exit_code=process.returncode)
            forget_process(process.pid)  # its live gauges no longer count
            self._process = None
        if time.monotonic() < self._restart_at:
            return
        try:
            self.start()
        except RuntimeError:
            # The next try waits longer, doubling while it keeps failing.
            log.exception("committer_restart_failed", retry_in_seconds=self._restart_delay)
            self._restart_at = time.monotonic() + self._restart_delay
            self._restart_delay = min(self._restart_delay * 2, RESTART_SECONDS[1])
        else:
            self._restart_delay = RESTART_SECONDS[0]

    def stop(self) -> None:
        """After the workers: let it finish what it holds, then end it."""
        if self._process is not None:
            self._end(self._process)
            self._process = None
        shutil.rmtree(self._folder, ignore_errors=True)

    @staticmethod
    def _end(process: subprocess.Popen[str]) -> None:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # its signal to stop
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def shared_committer(wanted: bool) -> Iterator[CommitterProcess | None]:
    """For `boxoffice serve`: the committer process, running while the block runs, if `wanted`."""
    if not wanted:
        yield None
        return
    committer = CommitterProcess()
    try:
        committer.start()
        os.environ[SOCKET_ENV] = committer.path  # the workers inherit it
        yield committer
    finally:
        os.environ.pop(SOCKET_ENV, None)
        committer.stop()


# The committer process itself ---------------------------------------------------------


class _Links:
    """The committer's side of every worker's link: each command submitted as it comes,
    each answer written back when it is ready."""

    def __init__(self, booker: BatchedBooker) -> None:
        self._booker = booker
        self.answering: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: dict[int, asyncio.Task[None]] = {}
        outbox = _Outbox(writer)
        try:
            with contextlib.suppress(ConnectionError):
                async for kind, sequence, command in _messages(reader):
                    if kind == _COMMAND:
                        task = asyncio.create_task(self._answer(outbox, tasks, sequence, command))
                        tasks[sequence] = task
                        self.answering.add(task)
                        task.add_done_callback(self.answering.discard)
                    elif (abandoned := tasks.pop(sequence, None)) is not None:
                        abandoned.cancel()  # perhaps before it ever ran: popped here
            # The worker is gone: nobody waits for these answers (a batch under way
            # still commits its commands, as for a client that disconnects).
            for task in list(tasks.values()):
                task.cancel()
        finally:
            writer.close()

    async def _answer(
        self,
        outbox: _Outbox,
        tasks: dict[int, asyncio.Task[None]],
        sequence: int,
        command: Command,
    ) -> None:
        events: tuple[str, ...] = ()
        try:
            # The event first (a confirm, release or cancel names only a hold or booking):
            # the worker's cached availability of it is dropped with the answer.
            command = await self._booker.events_of.resolve(command)
            events = tuple(events_named((command,)))
            frame = pack_message((sequence, True, await self._booker.submit(command), events))
        except Exception as error:
            frame = _error_frame(sequence, error, events)
        finally:
            tasks.pop(sequence, None)
        with contextlib.suppress(ConnectionError):  # the worker is gone
            outbox.send(frame)


async def _run(path: str) -> None:
    import gc

    from boxoffice.booking.batched import BatchedBooker
    from boxoffice.config import Settings
    from boxoffice.db.database import Database
    from boxoffice.observability import metrics
    from boxoffice.observability.logging import configure_logging
    from boxoffice.periodic import Periodic

    settings = Settings()
    settings = settings.model_copy(update={"db_pool_size": min(settings.db_pool_size, POOL_SIZE)})
    configure_logging(settings.log_level, settings.log_format)
    database = Database.from_settings(settings)
    booker = BatchedBooker(
        database,
        max_tickets_per_booking=settings.max_tickets_per_booking,
        max_batch_size=settings.max_batch_size,
        queue_timeout_seconds=settings.booking_queue_timeout_ms / 1000,
    )
    await booker.start()

    async def flush() -> None:
        metrics.flush()

    flushing = Periodic("boxoffice-committer-metrics", FLUSH_SECONDS, flush)
    flushing.start()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead committer's socket
    links = _Links(booker)
    server = await asyncio.start_unix_server(links.serve, path=path)
    os.chmod(path, 0o600)
    gc.collect()
    gc.freeze()
    stdin_closed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), _on_stdin, sys.stdin.fileno(), stdin_closed)
    print("ready", flush=True)
    await stdin_closed.wait()
    server.close()
    await booker.stop()  # whatever is queued is committed and answered
    await asyncio.gather(*links.answering, return_exceptions=True)
    await flushing.stop()
    metrics.flush()
    await database.dispose()


def _on_stdin(fd: int, closed: asyncio.Event) -> None:
    if not os.read(fd, 4096):
        asyncio.get_running_loop().remove_reader(fd)
        closed.set()


def main() -> None:
    import uvloop

    for ignored in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(ignored, signal.SIG_IGN)
    started = time.monotonic()
    uvloop.run(_run(sys.argv[1]))
    log.info("committer_stopped", seconds=round(time.monotonic() - started, 1))


if __name__ == "__main__":
    main()
