"""Refuse request bodies over MAX_BODY_BYTES with a problem+json 413, and stalled ones with 408.

Starlette's own `RequestBodyLimitMiddleware` (behind FastAPI's `max_body_size`)
answers an oversized `Content-Length` with a text/plain 413 that replaces
whatever the app sent, so our problem+json contract could not hold with it.
This middleware checks the declared length up front and counts streamed
(chunked) bodies as they arrive; either way the app never sees the excess.

A client that stops sending its body, or trickles it a byte at a time
(slowloris), would hold a connection and a request's memory for ever: the
whole body must arrive within BODY_TIMEOUT_SECONDS of the first read, past
which the answer is 408 and the connection closes.
Timing a read costs a timer per request, so it is skipped when the server's
protocol saw the whole body arrive with the head (`boxoffice.body_complete`).
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxoffice.api.problems import send_problem


class BodyLimitMiddleware:
    """Cap each request body at `max_bytes`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_seconds: float = 10.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return

        received = 0
        if scope.get("boxoffice.body_complete") and declared is not None:
            # Our server protocol saw the whole (declared, in-limit) body arrive already:
            # no read can stall, so no timer (api/http_protocol.py).
            await self.app(scope, receive, send)
            return

        deadline: float | None = None  # the whole body within timeout_seconds of its start
        complete = False

        async def counted_receive() -> Message:
            nonlocal received, deadline, complete
            if complete:  # after the body: a wait for the disconnect, not to be timed
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.timeout_seconds
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # Routed to the app's HTTPException handler: a problem+json 408.
                raise HTTPException(status_code=408, headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Routed to the app's HTTPException handler: a problem+json 413.
                    raise HTTPException(status_code=413)
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, counted_receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_problem(
            scope,
            send,
            413,
            "payload_too_large",
            f"The request body is larger than {self.max_bytes} bytes.",
            headers=[(b"connection", b"close")],
        )
