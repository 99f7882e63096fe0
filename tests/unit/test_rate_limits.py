"""The token bucket's arithmetic, its memory bound, and the fall-back from Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from boxoffice.observability import metrics
from boxoffice.services.rate_limits import (
    Buckets,
    LocalBuckets,
    Quota,
    RedisBuckets,
    Verdict,
    take,
)


class Timer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_quota_parses_requests_per_window() -> None:
    assert Quota.parse("20/10s") == Quota(20, 10.0)
    assert Quota.parse("300/1m") == Quota(300, 60.0)
    assert Quota.parse("1000/h") == Quota(1000, 3600.0)
    assert str(Quota.parse("20 / 10s")) == "20/10s"


@pytest.mark.parametrize(
    "text", ["", "20", "20/", "0/10s", "20/0s", "-1/10s", "20/10x", "a/1s", "5/0.5s", "1/1.5s"]
)
def test_quota_refuses_what_is_not_one(text: str) -> None:
    with pytest.raises(ValueError, match="quota"):
        Quota.parse(text)


def test_a_burst_passes_then_the_bucket_refills_at_its_rate() -> None:
    timer = Timer()
    buckets = LocalBuckets(timer=timer)
    quota = Quota(5, 10)  # 5 at once, one more every 2 s
    verdicts = [buckets.take("k", quota) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0, 0]
    assert verdicts[-1].retry_after == pytest.approx(2.0)
    assert verdicts[-1].reset_after == pytest.approx(10.0)
    timer.now += 1.9
    assert not buckets.take("k", quota).allowed
    timer.now += 0.1
    after = buckets.take("k", quota)
    assert after.allowed
    assert after.remaining == 0
    timer.now += 100
    assert buckets.take("k", quota).remaining == 4  # full again, never more


def test_each_caller_has_a_bucket_of_its_own() -> None:
    buckets = LocalBuckets(timer=Timer())
    quota = Quota(1, 60)
    assert buckets.take("a", quota).allowed
    assert not buckets.take("a", quota).allowed
    assert buckets.take("b", quota).allowed


def test_memory_stays_bounded_and_full_buckets_are_forgotten_first() -> None:
    timer = Timer()
    buckets = LocalBuckets(timer=timer, max_entries=100)
    quota = Quota(1, 1)
    for n in range(100):
        buckets.take(f"old{n}", quota)
    timer.now += 5  # all of those are full again
    buckets.take("busy", Quota(1, 3600))
    assert set(buckets.tats) == {"busy"}
    for n in range(300):
        buckets.take(f"new{n}", Quota(1, 3600))
    assert len(buckets.tats) <= 100


@given(
    requests=st.integers(1, 50),
    window=st.floats(0.5, 100),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=200),
)
def test_no_window_ever_lets_more_through_than_the_quota_allows(
    requests: int, window: float, gaps: list[float]
) -> None:
    """Over any span of time t, at most requests + t / interval requests pass."""
    quota = Quota(requests, window)
    tat: float | None = None
    now = 0.0
    passed: list[float] = []
    for gap in gaps:
        now += gap
        new_tat, verdict = take(tat, now, quota)
        if verdict.allowed:
            assert new_tat is not None
            tat = new_tat
            passed.append(now)
        else:
            assert verdict.retry_after > 0
    for i, start in enumerate(passed):
        for j in range(i, len(passed)):
            span = passed[j] - start
            assert j - i + 1 <= requests + span / quota.interval + 1e-6


class FailingRedis:
    def __init__(self) -> None:
        self.calls = 0
        self.down = True

    async def take(self, key: str, quota: Quota) -> Verdict:
        self.calls += 1
        if self.down:
            raise ConnectionError("refused")
        return Verdict(True, 99, 0.0, 0.0)

    async def close(self) -> None:
        pass


def exported(name: str) -> float | None:
    """A metric as the next scrape would show it (counts reach prometheus-client at a flush)."""
    metrics.flush()
    return REGISTRY.get_sample_value(name)


async def test_a_redis_that_does_not_answer_falls_back_to_local_buckets_and_is_retried() -> None:
    fallbacks = exported("boxoffice_rate_limit_fallbacks_total") or 0.0
    timer = Timer()
    redis = FailingRedis()
    buckets = Buckets(redis, local=LocalBuckets(timer=timer), retry_seconds=5, timer=timer)  # type: ignore[arg-type]
    quota = Quota(2, 60)
    with capture_logs() as logs:
        verdicts = [await buckets.take("k", quota) for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]  # local limits hold
    assert redis.calls == 1  # not asked again until the retry time
    assert not buckets.shared
    assert exported("boxoffice_rate_limit_fallbacks_total") == fallbacks + 1
    assert exported("boxoffice_rate_limits_shared") == 0
    assert [entry["log_level"] for entry in logs] == ["warning"]  # once, not per request
    assert "Redis does not answer" in logs[0]["event"]
    timer.now += 5
    redis.down = False
    assert (await buckets.take("k", quota)).remaining == 99  # Redis's verdict again
    assert buckets.shared
    assert exported("boxoffice_rate_limits_shared") == 1


async def test_a_redis_that_hangs_costs_a_request_its_timeout_once_then_nothing() -> None:
    """A server that accepts and never answers (a stopped or partitioned Redis)."""

    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = RedisBuckets(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.1)
    buckets = Buckets(redis, retry_seconds=60)
    try:
        started = time.monotonic()
        first = await buckets.take("k", Quota(5, 60))
        waited = time.monotonic() - started
        assert first.allowed
        assert waited < 1.0  # the timeout, not a hang
        started = time.monotonic()
        for _ in range(4):
            assert (await buckets.take("k", Quota(5, 60))).allowed
        assert not (await buckets.take("k", Quota(5, 60))).allowed  # local limits hold
        assert time.monotonic() - started < 0.05  # Redis is not asked again meanwhile
    finally:
        done.set()
        await buckets.close()
        server.close()
        await server.wait_closed()


def test_ipv6_callers_are_counted_by_their_64_and_ipv4_by_address() -> None:
    from boxoffice.api.rate_limits import client_address

    def scope(host: str) -> dict[str, object]:
        return {"client": (host, 1234)}

    assert client_address(scope("2001:db8:1:2::1")) == client_address(scope("2001:db8:1:2:ff::9"))
    assert client_address(scope("2001:db8:1:2::1")) != client_address(scope("2001:db8:1:3::1"))
    assert client_address(scope("203.0.113.7")) == "203.0.113.7"
    assert client_address({}) == "unknown"
