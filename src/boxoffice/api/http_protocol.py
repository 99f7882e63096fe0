"""uvicorn's httptools protocol with the two guards it lacks: a head size and a head time.

uvicorn with httptools accepts a request head of any size (a 2 MB header was
read whole) and waits for it for ever: a client that opens connections and
trickles header bytes (slowloris) holds them, and their memory, as long as it
likes. h11 has a size limit but no time limit, and parses slower. This
subclass, given to uvicorn as its `http` protocol, adds both:

- a head (request line and headers) over MAX_HEADER_BYTES is answered
  `431 request_header_fields_too_large` and the connection closed;
- a head not complete within BODY_TIMEOUT_SECONDS of its first byte (or of the
  connection, for one that sends nothing) is answered `408 request_timeout`
  and the connection closed.

Both close lingering: the answer, then the end of writing, then whatever the
client still sends read and dropped for up to LINGER_SECONDS, so the answer is
not lost to a reset.

A stalled body is `BodyLimitMiddleware`'s (also 408), which needs no timer when
this protocol has seen the whole body arrive with the head (`BODY_COMPLETE` in
the scope); an idle keep-alive connection is closed after KEEP_ALIVE_SECONDS by
uvicorn itself.

It also answers the request a sale's million customers repeat, `GET
/queue/{ticket}`, itself (`_answer_poll`), without the ASGI machinery
around every other request (a task, the request's cycle, the middleware, two
writes): the same bytes (tests/api/test_direct_polls.py), counted in the
request metrics like any answer. Only the plain case is answered so: an
HTTP/1.1 GET of a valid ticket, on time, with no body, no query, no key, no
`Origin` (CORS is the app's), nothing pipelined behind another request, a
writable connection, and the access log off (it would name the client as the
proxy-headers middleware sees it). Anything else, a refusal included, goes to
the app as before.

An answer's head and body leave in two `send()` calls, as uvicorn writes them.
Holding the head back to send both in one was tried (7cbd6ac) and taken out:
side by side it saved no CPU on any hot route (docs/performance.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
from typing import Any, cast

import structlog
from starlette.datastructures import State
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from boxoffice.api.fast_routes import JSON_CONTENT
from boxoffice.api.problems import PROBLEM_MEDIA_TYPE, problem_body
from boxoffice.api.request_ids import request_id_from
from boxoffice.api.routes.waiting_room import POLL_PREFIX, POLL_ROUTE, poll_body
from boxoffice.api.security_headers import NO_STORE
from boxoffice.config import get_settings
from boxoffice.domain.errors import QueueTicketInvalid

log = structlog.get_logger("boxoffice.api")

BODY_COMPLETE = "boxoffice.body_complete"  # in the scope: the body has all arrived
LINGER_SECONDS = 1.0  # a refused connection's reading after its answer, at most


_POLL_PREFIX = POLL_PREFIX.encode()
# A poll with any of these goes to the app: a key to check, CORS to answer, a body to read.
_NOT_HERE = frozenset(
    {b"authorization", b"origin", b"content-length", b"transfer-encoding", b"expect"}
)


def _state_of(app: Any) -> State | None:
    """The application's state, under whatever uvicorn wrapped it in (proxy headers)."""
    for _ in range(8):
        state = getattr(app, "state", None)
        if isinstance(state, State):
            return state
        app = getattr(app, "app", None)
    return None


class _HeadTooLarge(Exception):
    """Raised inside the parser's callback: httptools stops, uvicorn calls send_400_response."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """See the module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()  # read once per process, then cached
        self.max_head_bytes = settings.max_header_bytes
        self.head_timeout = settings.body_timeout_seconds
        self.head_bytes = 0  # of the head's complete parts (request line, headers)
        self.raw_head = 0  # bytes received of a head not yet complete
        self.head_tail = b""  # its last 3 bytes, to find its end across chunks
        self.in_head = True
        self.head_timer: asyncio.TimerHandle | None = None
        self.refusal: tuple[int, str, str] | None = None
        self.refused = False  # answered 408 or 431: reading what still comes, then closing
        self.our_state = _state_of(self.app)  # the app's, for the polls answered here
        self.answered_here = False  # the request being parsed was answered by `_answer_poll`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # the rest of a refused head, read and dropped (`_refuse`)
        # httptools keeps an unfinished header to itself until its end arrives, so the
        # callbacks alone would let one endless header grow without bound: count raw bytes.
        if self.in_head and self.refusal is None:
            if self.head_timer is None and (self.cycle is None or self.cycle.response_complete):
                # Bytes between requests (bare CRLFs start no message) cancelled uvicorn's
                # keep-alive timer: they must not hold the connection open for ever.
                self._start_head_timer()
            end = (self.head_tail + data).find(b"\r\n\r\n")
            size = self.raw_head + (len(data) if end == -1 else end + 4 - len(self.head_tail))
            if size > self.max_head_bytes:
                self.refusal = self._too_large()
                self._refuse(*self.refusal)
                return
            self.raw_head = size
            self.head_tail = (self.head_tail + data)[-3:]
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and not cycle.more_body:
            # The whole body is here before the app reads it (the usual case: it came with
            # the head): `BodyLimitMiddleware` need not time its reads.
            cast(dict[str, Any], cycle.scope)[BODY_COMPLETE] = True

    def on_message_complete(self) -> None:
        if self.answered_here:
            self.answered_here = False  # no cycle of uvicorn's was made for it
        else:
            super().on_message_complete()
        self.in_head, self.raw_head, self.head_tail = True, 0, b""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A request that came in the same read as a poll answered here: that answer armed
        # the keep-alive timer (`on_response_complete`), which must not run under this one.
        self._unset_keepalive_if_required()
        self.head_bytes = 0
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._stop_head_timer()
        if self.url.startswith(_POLL_PREFIX) and self._answer_poll():
            return
        super().on_headers_complete()

    def _answer_poll(self) -> bool:
        """Answer an on-time poll of a valid ticket here, if it is the plain case (see the
        module's docstring); False leaves the request to uvicorn and the app."""
        state = self.our_state
        if (
            state is None
            or self.access_log
            or self.root_path
            or self.parser.get_method() != b"GET"
            or self.parser.get_http_version() != "1.1"
            or self.parser.should_upgrade()
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.pipeline
            or self.flow.write_paused
            or b"?" in self.url
            or b"%" in self.url
        ):
            return False
        for name, _ in self.headers:
            if name in _NOT_HERE:
                return False
        started = perf_counter()
        path = self.url.decode("ascii")
        try:
            body = poll_body(state, path, self.headers)
        except QueueTicketInvalid:
            return False  # counted against its address by the app (api/rate_limits.py)
        except Exception:
            # Raised out of a parser callback it would be answered as a malformed request
            # (400); the app answers instead, its error handling and its log as for any.
            log.exception("direct_poll_failed")
            return False
        if body is None:
            return False
        keep_alive = self.parser.should_keep_alive()
        head = [STATUS_LINE[200]]
        for name, value in self.server_state.default_headers:
            head += (name.lower(), b": ", value, b"\r\n")
        head += (
            b"%s: %s\r\ncontent-length: %d\r\nx-request-id: %s\r\n%s: %s\r\n"
            % (*JSON_CONTENT, len(body), request_id_from(self.headers).encode(), *NO_STORE),
            b"" if keep_alive else b"connection: close\r\n",
            b"\r\n",
            body,
        )
        self.transport.write(b"".join(head))
        self.answered_here = True
        count: Callable[[Any, int, float], None] | None = getattr(state, "count_request", None)
        if count is not None:
            scope = {"route": POLL_ROUTE, "method": "GET", "path": path}
            try:
                count(scope, 200, perf_counter() - started)
            except Exception:  # answered already: the connection goes on
                log.exception("direct_poll_not_counted")
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # as uvicorn's own answer ends: keep-alive, reading on
        return True

    def send_400_response(self, msg: str) -> None:
        if self.refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(*self.refusal)

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.max_head_bytes:
            self.refusal = self._too_large()
            raise _HeadTooLarge()

    def _too_large(self) -> tuple[int, str, str]:
        return (
            431,
            "request_header_fields_too_large",
            f"The request line and headers are larger than {self.max_head_bytes} bytes.",
        )

    def _start_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if self.refused:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A request is being answered; a pipelined head behind it gets its time again.
            if self.in_head:
                self._start_head_timer()
            return
        if self.transport.is_closing():
            return
        self._refuse(
            408,
            "request_timeout",
            f"The request line and headers did not arrive within {self.head_timeout:g} s.",
        )

    def _refuse(self, status: int, code: str, detail: str) -> None:
        body = problem_body(status, code, detail, instance=None)
        phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        defaults = b"".join(  # the security headers, as on every other answer
            name + b": " + value + b"\r\n"
            for name, value in (*self.server_state.default_headers, NO_STORE)
        )
        self.transport.write(
            b"HTTP/1.1 %d %s\r\n%scontent-type: %s\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s"
            % (status, phrase, defaults, PROBLEM_MEDIA_TYPE.encode(), len(body), body)
        )
        self.refused = True
        self._stop_head_timer()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # A lingering close: closed while the client is still sending (the rest of a 100 KB
        # header), the connection is reset, and the client may lose the answer it had not
        # read yet. Said "no more" (FIN) instead, it reads the answer; what it still sends is
        # read and dropped, until it closes or LINGER_SECONDS pass.
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
