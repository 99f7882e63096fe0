"""Request ids: every request has one, and every answer and log line of it carries it.

The client's `X-Request-ID` when it is sensible (1 to 128 printable ASCII
characters), else ours: a per-process random prefix and a counter, unique
without a system call per request. It is sent back in `X-Request-ID` on every
answer (errors included), recorded with each audit record the request writes,
and added to every log line written while the request runs (the `request_id`
field, through `observability.logging.REQUEST_ID`), uvicorn's access log too.

Being outermost, it also times every request and hands its status to
`count` (api/request_metrics.py), and gives every answer that sets no
`Cache-Control` of its own `Cache-Control: no-store` (api/security_headers.py),
in the one wrapper around `send` it needs anyway.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from time import perf_counter

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxoffice.api.security_headers import NO_STORE
from boxoffice.db.tables import MAX_REQUEST_ID_LENGTH
from boxoffice.observability.logging import REQUEST_ID

SCOPE_KEY = "boxoffice.request_id"

_PREFIX = os.urandom(6).hex()
_counter = itertools.count(1)


def _given(value: bytes) -> str | None:
    if 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii():
        text = value.decode("ascii")
        if text.isprintable():
            return text
    return None


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` if sensible, else a new one of ours."""
    for name, value in headers:
        if name == b"x-request-id":
            given = _given(value)
            if given is not None:
                return given
            break
    return f"{_PREFIX}-{next(_counter):x}"


# Called once a request is answered: its scope, status and duration in seconds.
CountRequest = Callable[[Scope, int, float], None]


class RequestIdMiddleware:
    """Outermost: names the request before anything can answer or log for it, and has it
    counted once answered."""

    def __init__(self, app: ASGIApp, *, count: CountRequest | None = None) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        ident = scope[SCOPE_KEY] = request_id_from(scope["headers"])
        header = (b"x-request-id", ident.encode("ascii"))
        status = 500  # unless an answer starts: an exception escaped every handler

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), header]
                for name, _ in headers:
                    if name == b"cache-control":
                        break
                else:
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        # Not reset afterwards: the server runs each request in a task of its own, whose
        # context ends with it, and what runs after us in that task (the 500 handler,
        # which Starlette runs outside every middleware, and the server's own log of the
        # error) still belongs to this request.
        REQUEST_ID.set(ident)
        if self.count is None:
            await self.app(scope, receive, send_with_id)
            return
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.count(scope, status, perf_counter() - started)


def request_id(request: Request) -> str:
    """This request's id, as `RequestIdMiddleware` gave it (recorded in the audit trail)."""
    ident: str = request.scope[SCOPE_KEY]
    return ident


def request_id_header(scope: Scope) -> dict[str, str]:
    """For an answer sent past `RequestIdMiddleware` (the 500, which Starlette sends from
    outside every middleware)."""
    ident = scope.get(SCOPE_KEY)
    return {} if ident is None else {"X-Request-ID": ident}
