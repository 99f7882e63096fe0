"""The event loop's lag probe (`observability/loop_lag.py`): a loop kept busy shows as lag."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from boxoffice.observability import metrics
from boxoffice.observability.loop_lag import LoopLag

NAME = "boxoffice_event_loop_lag_seconds"


def exported(suffix: str, labels: dict[str, str] | None = None) -> float:
    metrics.flush()
    return REGISTRY.get_sample_value(NAME + suffix, labels or {}) or 0.0


def within(seconds: str) -> float:
    return exported("_bucket", {"le": seconds})


async def test_an_idle_loop_runs_the_probe_on_time_and_a_blocked_one_late() -> None:
    probe = LoopLag(every_seconds=0.01)
    count, on_time = exported("_count"), within("0.025")
    started = time.perf_counter()
    probe.start()
    probe.start()  # a second start keeps the one timer
    try:
        await asyncio.sleep(0.2)  # idle: a probe every 10 ms, each about on time
        idle = exported("_count") - count
        # One timer at a time, each due 10 ms after the last ran: never more than that.
        assert 5 <= idle <= (time.perf_counter() - started) / 0.01 + 1, idle
        assert within("0.025") - on_time >= idle / 2, "an idle loop's timers ran late"
        count, sum_ = exported("_count"), exported("_sum")
        over = count - within("0.25")
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the point: the probe runs late
        await asyncio.sleep(0.05)
        assert exported("_count") - count >= 1
        assert exported("_sum") - sum_ >= 0.25
        assert exported("_count") - within("0.25") - over >= 1, "the late probe counted on time"
    finally:
        probe.stop()
    stopped = exported("_count")
    await asyncio.sleep(0.05)
    assert exported("_count") == stopped, "the probe ran on after stop()"
