"""Response headers that keep browsers from misusing an API answer, on every response.

An API answers JSON, never a page: nothing in it may be sniffed as HTML,
framed, or cached by a shared cache when it belongs to a key. The interactive
docs (`/docs`, `/redoc`) load Swagger UI's scripts, so they get no
`Content-Security-Policy`; everything else forbids any content at all.
Cross-origin browser access is CORS's business (`CORS_ALLOW_ORIGINS`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_API = (
    *_ALWAYS,
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
_PAGES = ("/docs", "/redoc")

# What a browser script may read of an answer, when CORS lets it call at all.
EXPOSED_HEADERS = (
    "Location",
    "Link",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "X-Request-ID",
)
_PRIVATE = (b"cache-control", b"no-store")


class SecurityHeadersMiddleware:
    """Add the headers above; answers to a key holder are also `Cache-Control: no-store`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = _ALWAYS if scope["path"].startswith(_PAGES) else _API

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *added]
                if scope.get("boxoffice.principal") is not None and not any(
                    name == b"cache-control" for name, _ in headers
                ):
                    headers.append(_PRIVATE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
