"""Rate limits: a token bucket per caller and route class, in this process or in Redis.

Each bucket is kept as GCRA does it (the generic cell rate algorithm, a token
bucket written as one number): the "theoretical arrival time" `tat` at which
the bucket would be full again. A request costs one `interval` (window ÷
quota); it is let through while `tat + interval - window <= now`. One float
per caller, no timers, and no sweep: a bucket whose `tat` lies in the past is
full, the same as one never seen.

`LocalBuckets` keep that number in a dict (per process: with N processes a
caller gets up to N times the quota). `RedisBuckets` keep it in Redis, so that
every process and server shares one bucket per caller; the arithmetic runs in
a Lua script, atomically, on Redis's own clock. `Buckets` uses Redis when a
`REDIS_URL` is set and falls back to the local buckets, with a warning and a
metric, whenever Redis does not answer within its timeout, trying it again a
few seconds later. Rate limiting never fails a request on its own account.

Why not a library: `limits` offers fixed and sliding windows, not a token
bucket, and `pyrate-limiter` stores every hit (a Redis sorted set of up to
`quota` entries per caller); GCRA is one key per caller and a dozen lines.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog

from boxoffice.observability import metrics

log = structlog.get_logger("boxoffice.rate_limits")

_QUOTA = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|m|h)\s*")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Quota:
    """`requests` per `window` seconds, all of which may come at once (the burst)."""

    requests: int
    window: float

    @classmethod
    def parse(cls, text: str) -> Quota:
        """`"20/10s"`, `"300/1m"`, `"1000/h"`: requests per window."""
        match = _QUOTA.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a quota: write requests/window, e.g. 20/10s")
        requests, count, unit = match.groups()
        window = float(count or 1) * _UNITS[unit]
        if int(requests) < 1 or window < 1 or window != int(window):
            # RateLimit-Policy's `w` is a whole number of seconds.
            raise ValueError(
                f"{text!r}: a quota needs at least one request in a window of whole seconds"
            )
        return cls(int(requests), window)

    @property
    def interval(self) -> float:
        """What one request costs, in seconds of refill."""
        return self.window / self.requests

    def times(self, factor: int) -> Quota:
        return Quota(self.requests * factor, self.window)

    def __str__(self) -> str:
        return f"{self.requests}/{int(self.window)}s"


class Verdict(NamedTuple):
    """Whether a request may pass, and what its caller has left (for the headers).

    A tuple: one is made per request, and a frozen dataclass costs several times more."""

    allowed: bool
    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: float  # seconds until one more request would pass (0 when allowed)


def take(tat: float | None, now: float, quota: Quota) -> tuple[float | None, Verdict]:
    """GCRA: the bucket's new `tat` (None: unchanged) and the verdict on one request."""
    interval = quota.interval
    start = now if tat is None or tat < now else tat
    new_tat = start + interval
    allow_at = new_tat - quota.window
    if now < allow_at:
        return None, Verdict(False, 0, start - now, allow_at - now)
    remaining = int((now - allow_at) / interval + 1e-9)
    return new_tat, Verdict(True, remaining, new_tat - now, 0.0)


class LocalBuckets:
    """Buckets in this process's memory, bounded: full ones are dropped when it grows."""

    def __init__(
        self, *, timer: Callable[[], float] = time.monotonic, max_entries: int = 100_000
    ) -> None:
        self.timer = timer
        self.max_entries = max_entries
        self.tats: dict[str, float] = {}

    def take(self, key: str, quota: Quota) -> Verdict:
        now = self.timer()
        new_tat, verdict = take(self.tats.get(key), now, quota)
        if new_tat is not None:
            if len(self.tats) >= self.max_entries and key not in self.tats:
                self._prune(now)
            self.tats[key] = new_tat
        return verdict

    def _prune(self, now: float) -> None:
        # A bucket whose tat has passed is full: forgetting it changes nothing.
        self.tats = {key: tat for key, tat in self.tats.items() if tat > now}
        if len(self.tats) >= self.max_entries:  # all busy: the oldest debts go first
            for key in sorted(self.tats, key=self.tats.__getitem__)[: self.max_entries // 10]:
                del self.tats[key]


# GCRA on Redis's clock: KEYS[1] bucket, ARGV interval and window in seconds. Returns
# allowed (1/0), then remaining, reset_after and retry_after as strings (Lua numbers
# would come back truncated to integers).
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if now < allow_at then
  return {0, '0', tostring(tat - now), tostring(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.6f', new_tat),
           'PX', math.ceil((new_tat - now) * 1000))
return {1, tostring(math.floor((now - allow_at) / interval + 1e-9)),
        tostring(new_tat - now), '0'}
"""


class RedisBuckets:
    """Buckets in Redis, shared by every process and server that names the same Redis."""

    def __init__(self, url: str, *, timeout_seconds: float, prefix: str = "boxoffice:rl:") -> None:
        from redis.asyncio import Redis  # only deployments with REDIS_URL load the client

        self.client: Any = Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self.script = self.client.register_script(_GCRA_LUA)
        self.prefix = prefix

    async def take(self, key: str, quota: Quota) -> Verdict:
        allowed, remaining, reset_after, retry_after = await self.script(
            keys=[self.prefix + key], args=[repr(quota.interval), repr(quota.window)]
        )
        return Verdict(bool(allowed), int(remaining), float(reset_after), float(retry_after))

    async def close(self) -> None:
        await self.client.aclose()


class Buckets:
    """Redis's shared buckets when configured and answering, else this process's own."""

    def __init__(
        self,
        redis: RedisBuckets | None = None,
        *,
        local: LocalBuckets | None = None,
        retry_seconds: float = 5.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.local = local or LocalBuckets()
        self.retry_seconds = retry_seconds
        self.timer = timer
        self.redis_down_until = 0.0
        metrics.RATE_LIMITS_SHARED.set(1 if redis is not None else 0)

    @property
    def shared(self) -> bool:
        """Whether the limits in force right now are the shared ones."""
        return self.redis is not None and self.redis_down_until == 0.0

    async def take(self, key: str, quota: Quota) -> Verdict:
        if self.redis is None:
            return self.local.take(key, quota)
        if self.redis_down_until and self.timer() < self.redis_down_until:
            return self.local.take(key, quota)
        try:
            verdict = await self.redis.take(key, quota)
        except Exception as error:  # any failure of Redis: limits fall back, requests go on
            self._fell_back(error)
            return self.local.take(key, quota)
        if self.redis_down_until:
            self.redis_down_until = 0.0
            metrics.RATE_LIMITS_SHARED.set(1)
            log.warning("rate limits: Redis answers again; limits are shared again")
        return verdict

    def _fell_back(self, error: Exception) -> None:
        first = self.redis_down_until == 0.0
        self.redis_down_until = self.timer() + self.retry_seconds
        if first:
            metrics.RATE_LIMIT_FALLBACKS.inc()
            metrics.RATE_LIMITS_SHARED.set(0)
            log.warning(
                "rate limits: Redis does not answer; each process now limits on its own "
                f"until it does (trying again every {self.retry_seconds:g} s)",
                error=type(error).__name__,
            )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1: what `Retry-After` may carry."""
    return str(max(1, math.ceil(seconds)))
