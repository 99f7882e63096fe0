"""Rate limits at the HTTP edge: one bucket per caller and route class, 429 past it.

The caller is its API key (by id), or its address when it sent none (the
public reads, and every request under BOXOFFICE_OPEN_ACCESS). Organizer and
admin keys get RATE_LIMIT_STAFF_FACTOR times the quota: a box office or a
shop's back end books for many people through one key. Health checks are
never limited, and
neither are queue polls, which are paced per ticket instead.

Every limited response carries the IETF `RateLimit-Policy` and `RateLimit`
headers (draft-ietf-httpapi-ratelimit-headers: `"purchase";q=20;w=10` and
`"purchase";r=19;t=1`); a refusal is a 429 problem+json with `Retry-After`.

Failed authentications are counted per address in a bucket of their own
(`auth`): once it is empty, the address gets 429 without its keys being
looked up at all, which is what makes guessing keys slow.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from typing import Literal, NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxoffice.api.fraud import peer_address, watch_refusal
from boxoffice.api.problems import send_problem
from boxoffice.config import Settings
from boxoffice.domain.access import Principal
from boxoffice.observability import metrics
from boxoffice.services.rate_limits import (
    Buckets,
    LocalBuckets,
    Quota,
    RedisBuckets,
    Verdict,
    retry_after_header,
)

RouteClass = Literal["read", "purchase", "write", "keys", "auth"]
_PURCHASE_PREFIXES = ("/book", "/holds")  # /book, /bookings…, /holds…
_UNLIMITED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes


def route_class(method: str, path: str) -> RouteClass | None:
    """Which quota a request draws on (None: not limited)."""
    if path.startswith("/keys"):
        return "keys"
    if method in ("GET", "HEAD"):
        if path in _UNLIMITED or path.startswith("/queue/"):
            return None  # a queue ticket's polls are paced per ticket (domain/poll_pacing.py)
        return "read"
    if path.startswith(_PURCHASE_PREFIXES):
        return "purchase"
    return "write"


class Limit(NamedTuple):
    """A verdict with the bucket's name and policy header, ready to become headers.

    A tuple, not a frozen dataclass: one is made per request, and a frozen dataclass's
    constructor costs several times a tuple's."""

    name: RouteClass
    policy: bytes  # the RateLimit-Policy value, made once per class and quota
    verdict: Verdict

    def headers(self) -> list[tuple[bytes, bytes]]:
        verdict = self.verdict
        reset = max(0, math.ceil(verdict.reset_after - 1e-6))  # whole seconds, rounded up
        return [
            (b"ratelimit-policy", self.policy),
            (b"ratelimit", b'"%s";r=%d;t=%d' % (self.name.encode(), verdict.remaining, reset)),
        ]


class RateLimiter:
    """The quotas in force and the buckets they are counted in."""

    def __init__(self, settings: Settings, buckets: Buckets) -> None:
        self.buckets = buckets
        quotas: dict[RouteClass, Quota | None] = {
            "read": settings.rate_limit_read,
            "purchase": settings.rate_limit_purchase,
            "write": settings.rate_limit_write,
            "keys": settings.rate_limit_keys,
            "auth": settings.rate_limit_auth_failures,
        }
        factor = settings.rate_limit_staff_factor
        # (class, staff?) -> (quota, its RateLimit-Policy header), or None: not limited.
        self.policies: dict[tuple[RouteClass, bool], tuple[Quota, bytes] | None] = {}
        for name, quota in quotas.items():
            for staff in (False, True):
                chosen = None if quota is None else quota.times(factor) if staff else quota
                self.policies[(name, staff)] = (
                    None
                    if chosen is None
                    else (chosen, f'"{name}";q={chosen.requests};w={int(chosen.window)}'.encode())
                )
        # Addresses whose failed-authentication bucket is empty: until when, when it is
        # full again (this process's clock), and its refusal; their keys are not looked up.
        self.auth_blocked: dict[str, tuple[float, float, Limit]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter | None:
        if not settings.rate_limits_enabled:
            return None
        redis = (
            RedisBuckets(settings.redis_url, timeout_seconds=settings.redis_timeout_ms / 1000)
            if settings.redis_url
            else None
        )
        return cls(settings, Buckets(redis, local=LocalBuckets()))

    async def take(
        self, name: RouteClass, scope: Scope, principal: Principal | None
    ) -> Limit | None:
        """Charge one request to its caller's bucket (None: this class is not limited)."""
        if principal is not None and principal.key_id is not None:
            policy = self.policies[(name, principal.is_staff)]
            bucket = f"{name}:key:{principal.key_id}"
        else:
            policy = self.policies[(name, False)]
            bucket = f"{name}:ip:{client_address(scope)}"
        if policy is None:
            return None
        quota, header = policy
        buckets = self.buckets
        verdict = (  # no coroutine at all for the per-process buckets
            buckets.local.take(bucket, quota)
            if buckets.redis is None
            else await buckets.take(bucket, quota)
        )
        return Limit(name, header, verdict)

    def auth_blocked_for(self, scope: Scope, now: float) -> Limit | None:
        """The refusal of an address still blocked after too many failed authentications
        (None: not blocked), with what its bucket said when it ran out, brought up to now."""
        address = client_address(scope)
        blocked = self.auth_blocked.get(address)
        if blocked is None:
            return None
        until, full_at, limit = blocked
        if until <= now:
            del self.auth_blocked[address]
            return None
        verdict = Verdict(False, 0, max(full_at - now, until - now), until - now)
        return limit._replace(verdict=verdict)

    async def failed_authentication(self, scope: Scope, now: float) -> Limit | None:
        """Count a refused key against its address; a refused verdict blocks the address."""
        limit = await self.take("auth", scope, None)
        if limit is not None and not limit.verdict.allowed:
            if len(self.auth_blocked) > 100_000:
                self.auth_blocked.clear()
            verdict = limit.verdict
            self.auth_blocked[client_address(scope)] = (
                now + verdict.retry_after,
                now + verdict.reset_after,
                limit,
            )
        return limit

    async def close(self) -> None:
        await self.buckets.close()


def client_address(scope: Scope) -> str:
    """The caller's address as buckets count it: IPv6 by its /64, which one subscriber
    usually has whole (counting each address would give it 2^64 buckets)."""
    host = peer_address(scope)
    if host is None:
        return "unknown"
    return _ipv6_prefix(host) if ":" in host else host


@functools.lru_cache(maxsize=4096)
def _ipv6_prefix(host: str) -> str:
    try:
        return str(ipaddress.IPv6Network(f"{host}/64", strict=False))
    except ValueError:
        return host


async def send_too_many(
    scope: Scope, send: Send, name: str, limit: Limit | None, wait: float = 1.0
) -> None:
    """The 429, with `Retry-After` and (when a bucket said no) the rate-limit headers."""
    metrics.RATE_LIMITED.inc((name,))
    watch_refusal(scope, "rate_limited")
    if limit is not None:
        wait = limit.verdict.retry_after
    headers = [(b"retry-after", retry_after_header(wait).encode())]
    if limit is not None:
        headers += limit.headers()
    await send_problem(
        scope,
        send,
        429,
        "rate_limited",
        f"Too many requests: try again in {retry_after_header(wait)} s.",
        headers=headers,
    )


async def refused_credential(scope: Scope, send: Send) -> bool:
    """Count a credential that was refused (a key, a queue ticket) against its address:
    True when the address is past RATE_LIMIT_AUTH_FAILURES and was answered 429 here."""
    limiter: RateLimiter | None = scope["app"].state.rate_limiter
    if limiter is None:
        return False
    limit = await limiter.failed_authentication(scope, time.monotonic())
    if limit is None or limit.verdict.allowed:
        return False
    await send_too_many(scope, send, "auth", limit)
    return True


class RateLimitMiddleware:
    """Charge each request to its caller's bucket; 429 when it is empty."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter: RateLimiter | None = scope["app"].state.rate_limiter
        if limiter is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = route_class(scope["method"], scope["path"])
        limit = (
            None
            if name is None
            else await limiter.take(name, scope, scope.get("boxoffice.principal"))
        )
        if limit is None:
            await self.app(scope, receive, send)
            return
        if not limit.verdict.allowed:
            await send_too_many(scope, send, limit.name, limit)
            return
        headers = limit.headers()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
