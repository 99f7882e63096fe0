"""The background loops' one way to run and stop (`boxoffice/periodic.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from boxoffice import periodic
from boxoffice.periodic import Periodic


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What the loops log: a logger of the test's own (loggers are cached on first use)."""
    with structlog.testing.capture_logs() as captured:
        monkeypatch.setattr(periodic, "log", structlog.get_logger("boxoffice.periodic"))
        yield captured


class Counting:
    """A pass that counts itself, and can be made slow or to fail."""

    def __init__(self, *, seconds: float = 0.0, fail_first: int = 0) -> None:
        self.passes = 0
        self.finished = 0
        self.seconds = seconds
        self.fail_first = fail_first
        self.entered = asyncio.Event()

    async def __call__(self) -> None:
        self.passes += 1
        self.entered.set()
        if self.passes <= self.fail_first:
            raise RuntimeError("a bug in one pass")
        await asyncio.sleep(self.seconds)
        self.finished += 1


async def test_the_first_pass_waits_its_interval_unless_at_once() -> None:
    later, now = Counting(), Counting()
    loops = [Periodic("later", 30, later), Periodic("now", 30, now, at_once=True)]
    for loop in loops:
        loop.start()
    await asyncio.wait_for(now.entered.wait(), 5)
    await asyncio.sleep(0.05)
    assert (later.passes, now.passes) == (0, 1)
    for loop in loops:
        await loop.stop()


async def test_it_repeats_until_stopped_and_not_after() -> None:
    work = Counting()
    loop = Periodic("repeat", 0.01, work)
    loop.start()
    loop.start()  # a second start does not make a second loop
    assert [task.get_name() for task in asyncio.all_tasks()].count("repeat") == 1
    await asyncio.sleep(0.2)
    await loop.stop()
    seen = work.passes
    assert seen >= 3
    await asyncio.sleep(0.1)
    assert work.passes == seen
    assert not loop.running


async def test_a_stop_lets_the_pass_under_way_finish() -> None:
    work = Counting(seconds=0.3)
    loop = Periodic("slow", 0.01, work)
    loop.start()
    await asyncio.wait_for(work.entered.wait(), 5)
    await loop.stop()
    assert work.finished == work.passes == 1


async def test_a_pass_longer_than_the_stop_allows_is_cancelled(
    logs: list[dict[str, Any]],
) -> None:
    work = Counting(seconds=30)
    loop = Periodic("stuck", 0.01, work, stop_seconds=0.1)
    loop.start()
    await asyncio.wait_for(work.entered.wait(), 5)
    await asyncio.wait_for(loop.stop(), 5)
    assert work.finished == 0
    assert [entry["event"] for entry in logs] == ["periodic_pass_cancelled"]
    assert not loop.running


async def test_a_failing_pass_is_logged_and_the_loop_goes_on(
    logs: list[dict[str, Any]],
) -> None:
    work = Counting(fail_first=2)
    loop = Periodic("flaky", 0.01, work, at_once=True)
    loop.start()
    for _ in range(100):
        if work.finished:
            break
        await asyncio.sleep(0.01)
    await loop.stop()
    assert work.finished >= 1
    failures = [entry for entry in logs if entry["event"] == "periodic_pass_failed"]
    assert len(failures) == 2
    assert failures[0]["task"] == "flaky"


async def test_a_pass_that_says_it_is_done_ends_the_loop() -> None:
    passes = 0

    async def until_third() -> bool:
        nonlocal passes
        passes += 1
        return passes < 3

    loop = Periodic("done", 0.01, until_third, at_once=True)
    loop.start()
    for _ in range(100):
        if not loop.running:
            break
        await asyncio.sleep(0.01)
    assert not loop.running
    assert passes == 3
    await loop.stop()


async def test_a_stopped_loop_starts_again_and_a_never_started_one_stops() -> None:
    work = Counting()
    loop = Periodic("again", 0.01, work, at_once=True)
    await loop.stop()  # never started: nothing to do
    loop.start()
    await asyncio.sleep(0.05)
    await loop.stop()
    first = work.passes
    loop.start()
    await asyncio.sleep(0.05)
    assert loop.running
    await loop.stop()
    assert work.passes > first


async def test_a_start_during_a_stop_does_not_hold_the_stop_up() -> None:
    work = Counting(seconds=0.2)
    loop = Periodic("overlap", 0.01, work, stop_seconds=10)
    loop.start()
    await asyncio.wait_for(work.entered.wait(), 5)
    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0)
    loop.start()  # a new run, with its own stop signal
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(stopping, 5)
    assert asyncio.get_running_loop().time() - started < 1, "the old run missed its signal"
    await loop.stop()


async def test_a_loop_that_ended_of_itself_starts_again() -> None:
    passes = 0

    async def once() -> bool:
        nonlocal passes
        passes += 1
        return False

    loop = Periodic("once", 0.01, once, at_once=True)
    for expected in (1, 2):
        loop.start()
        for _ in range(100):
            if not loop.running:
                break
            await asyncio.sleep(0.01)
        assert passes == expected
    await loop.stop()
