"""Response headers that keep browsers from misusing an API answer, and what CORS exposes.

An API answers JSON, never a page: nothing in it may be sniffed as HTML,
framed, or sent on as a referrer. These headers are the same on every answer,
so the server sends them (`boxoffice serve` gives them to uvicorn as its
default headers, written with the status line) instead of a middleware that
wrapped every response: that middleware cost 7 µs of the no-op route's ~130 µs
per request, in-process (docs/performance.md).
`frame-ancestors 'none'` is the policy for an API (OWASP's REST cheat sheet);
a stricter `default-src 'none'` would break the interactive docs' scripts.
Cross-origin browser access is CORS's business (`CORS_ALLOW_ORIGINS`).

Nothing may be kept by a cache (`NO_STORE`: most answers belong to a key) except
what says otherwise: `GET /events/{id}`, public, says how long its availability
may be kept (api/routes/events.py). uvicorn's default headers cannot be
overridden by an answer, only added to, so `Cache-Control` is not one of them:
`RequestIdMiddleware` adds `NO_STORE` to every answer that names no
`Cache-Control` of its own (in the one wrapper around `send` it has anyway),
and the refusals the server writes before any route (408, 431) carry it too.
"""

from __future__ import annotations

SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
]

NO_STORE = (b"cache-control", b"no-store")

# What a browser script may read of an answer, when CORS lets it call at all.
EXPOSED_HEADERS = (
    "Location",
    "Link",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "X-Request-ID",
    "ETag",
)
