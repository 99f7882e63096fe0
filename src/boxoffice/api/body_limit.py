"""Refuse request bodies over MAX_BODY_BYTES with a problem+json 413, and stalled ones with 408.

Starlette's own `RequestBodyLimitMiddleware` (behind FastAPI's `max_body_size`)
answers an oversized `Content-Length` with a text/plain 413 that replaces
whatever the app sent, so our problem+json contract could not hold with it.
This middleware checks the declared length up front and counts streamed
(chunked) bodies as they arrive; either way the app never sees the excess.

A client that stops sending its body (slowloris) would hold a connection and a
request's memory for ever: each wait for the next piece is bounded by
BODY_TIMEOUT_SECONDS, past which the answer is 408 and the connection closes.
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

        async def counted_receive() -> Message:
            nonlocal received
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    message = await receive()
            except TimeoutError:
                # Routed to the app's HTTPException handler: a problem+json 408.
                raise HTTPException(status_code=408, headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Routed to the app's HTTPException handler: a problem+json 413.
                    raise HTTPException(status_code=413)
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
