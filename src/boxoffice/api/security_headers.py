"""Response headers that keep browsers from misusing an API answer, and what CORS exposes.

An API answers JSON, never a page: nothing in it may be sniffed as HTML,
framed, sent on as a referrer, or kept by a cache (availability changes by
the second, and most answers belong to a key). These headers are the same on
every answer, so the server sends them (`boxoffice serve` gives them to
uvicorn as its default headers, written with the status line) instead of a
middleware that wrapped every response: that middleware cost 7 µs of the
no-op route's ~130 µs per request, in-process (docs/performance.md).
`frame-ancestors 'none'` is the policy for an API (OWASP's REST cheat sheet);
a stricter `default-src 'none'` would break the interactive docs' scripts.
Cross-origin browser access is CORS's business (`CORS_ALLOW_ORIGINS`).
"""

from __future__ import annotations

SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]

# What a browser script may read of an answer, when CORS lets it call at all.
EXPOSED_HEADERS = (
    "Location",
    "Link",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "X-Request-ID",
)
