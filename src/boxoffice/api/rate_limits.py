"""Rate limits at the HTTP edge: one bucket per caller and route class, 429 past it.

The caller is its API key (by id), or its address when it sent none (the
public reads, and every request under BOXOFFICE_OPEN_ACCESS). Organizer and
admin keys get RATE_LIMIT_STAFF_FACTOR times the quota: a box office or a
shop's back end books for many people through one key. Health checks are
never limited.

Every limited response carries the IETF `RateLimit-Policy` and `RateLimit`
headers (draft-ietf-httpapi-ratelimit-headers: `"purchase";q=20;w=10` and
`"purchase";r=19;t=1`); a refusal is a 429 problem+json with `Retry-After`.

Failed authentications are counted per address in a bucket of their own
(`auth`): once it is empty, the address gets 429 without its keys being
looked up at all, which is what makes guessing keys slow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxoffice.api.fraud import watch_refusal
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
        return None if path in _UNLIMITED else "read"
    if path.startswith(_PURCHASE_PREFIXES):
        return "purchase"
    return "write"


@dataclass(frozen=True, slots=True)
class Limit:
    """A verdict with the name and quota it was taken under, ready to become headers."""

    name: RouteClass
    quota: Quota
    verdict: Verdict

    def headers(self) -> list[tuple[bytes, bytes]]:
        reset = max(0, math.ceil(self.verdict.reset_after - 1e-6))  # whole seconds, rounded up
        return [
            (
                b"ratelimit-policy",
                f'"{self.name}";q={self.quota.requests};w={self.quota.window:g}'.encode(),
            ),
            (b"ratelimit", f'"{self.name}";r={self.verdict.remaining};t={reset}'.encode()),
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
        self.quotas = quotas
        factor = settings.rate_limit_staff_factor
        self.staff_quotas = {
            name: None if quota is None else quota.times(factor) for name, quota in quotas.items()
        }
        # Addresses whose failed-authentication bucket is empty, and until when (this
        # process's clock): their keys are not even looked up.
        self.auth_blocked: dict[str, float] = {}

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
        staff = principal is not None and principal.key_id is not None and principal.is_staff
        quota = (self.staff_quotas if staff else self.quotas)[name]
        if quota is None:
            return None
        if principal is not None and principal.key_id is not None:
            caller = f"key:{principal.key_id}"
        else:
            caller = f"ip:{client_address(scope)}"
        verdict = await self.buckets.take(f"{name}:{caller}", quota)
        return Limit(name, quota, verdict)

    def auth_blocked_for(self, scope: Scope, now: float) -> float:
        """Seconds this address must still wait after too many failed authentications."""
        until = self.auth_blocked.get(client_address(scope))
        if until is None:
            return 0.0
        if until <= now:
            del self.auth_blocked[client_address(scope)]
            return 0.0
        return until - now

    async def failed_authentication(self, scope: Scope, now: float) -> Limit | None:
        """Count a refused key against its address; a refused verdict blocks the address."""
        limit = await self.take("auth", scope, None)
        if limit is not None and not limit.verdict.allowed:
            if len(self.auth_blocked) > 100_000:
                self.auth_blocked.clear()
            self.auth_blocked[client_address(scope)] = now + limit.verdict.retry_after
        return limit

    async def close(self) -> None:
        await self.buckets.close()


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


async def send_too_many(
    scope: Scope, send: Send, name: str, limit: Limit | None, wait: float = 1.0
) -> None:
    """The 429, with `Retry-After` and (when a bucket said no) the rate-limit headers."""
    metrics.RATE_LIMITED.labels(name).inc()
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
