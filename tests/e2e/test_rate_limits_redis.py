"""Rate limits shared through a real Redis by two servers on one database, and the
fall-back to per-process limits when that Redis is killed mid-run (and back again)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.keys import key_by_cli
from tests.support.redis import ThrowawayRedis
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

QUOTA = 10


def reads(server: ServerProcess, count: int) -> list[int]:
    """`count` public reads, each on a connection of its own."""
    return [httpx.get(f"{server.url}/events", timeout=10).status_code for _ in range(count)]


def new_event(server: ServerProcess, headers: dict[str, str] | None = None) -> dict[str, Any]:
    made = httpx.post(
        f"{server.url}/events",
        json={"name": "Gig", "sections": [{"name": "GA", "price": 5, "capacity": 50}]},
        headers=headers,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    event: dict[str, Any] = made.json()
    return event


def fallbacks(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(r"^boxoffice_rate_limit_fallbacks_total (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


def test_two_servers_share_one_limit_and_fall_back_when_redis_dies(
    database_url: str, tmp_path: Path
) -> None:
    with ThrowawayRedis(tmp_path) as redis:
        env = {
            "RATE_LIMITS_ENABLED": "true",
            "REDIS_URL": redis.url,
            "RATE_LIMIT_READ": f"{QUOTA}/1h",  # no refill during the test
        }
        with (
            ServerProcess(database_url, env=env, log_dir=tmp_path) as first,
            ServerProcess(database_url, env=env, log_dir=tmp_path) as second,
        ):
            event = new_event(first)
            booking = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 1}
            answers = reads(first, 6) + reads(second, 6) + reads(first, 3)
            # One bucket for this address, whichever server answers: 10 in all, not 10 each.
            assert answers.count(200) == QUOTA
            assert set(answers) == {200, 429}
            assert answers[:QUOTA] == [200] * QUOTA

            redis.stop()
            # Redis is gone: each server counts on its own, and nothing fails.
            after = reads(first, QUOTA + 2) + reads(second, QUOTA + 2)
            assert after == ([200] * QUOTA + [429, 429]) * 2
            assert fallbacks(first) == 1
            assert fallbacks(second) == 1
            assert "Redis does not answer" in first.log()
            for server in (first, second):  # and booking goes on, limited per process
                booked = httpx.post(f"{server.url}/book", json=booking, timeout=10)
                assert booked.status_code == 201, booked.text

            redis.start()  # empty again: its buckets start full
            time.sleep(5.5)  # the servers try Redis again every 5 s
            back = reads(first, 1) + reads(second, 1)
            assert back == [200, 200]
            assert "Redis answers again" in first.log()
            shared = reads(first, QUOTA) + reads(second, QUOTA)
            assert shared.count(200) == QUOTA - 2


def test_a_keys_limit_is_shared_by_every_server(database_url: str, tmp_path: Path) -> None:
    """With keys on, a customer key's purchase bucket is one bucket across servers."""
    customer = {
        "Authorization": f"Bearer {key_by_cli(database_url, 'customer', '--customer-id', 'c1')}"
    }
    staff = {"Authorization": f"Bearer {key_by_cli(database_url, 'organizer')}"}
    with ThrowawayRedis(tmp_path) as redis:
        env = {
            "BOXOFFICE_OPEN_ACCESS": "false",
            "RATE_LIMITS_ENABLED": "true",
            "REDIS_URL": redis.url,
            "RATE_LIMIT_PURCHASE": "5/1h",
        }
        with (
            ServerProcess(database_url, env=env, log_dir=tmp_path) as first,
            ServerProcess(database_url, env=env, log_dir=tmp_path) as second,
        ):
            event = new_event(first, staff)
            body = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 1}
            statuses = [
                httpx.post(f"{server.url}/book", json=body, headers=customer, timeout=10)
                for server in (first, second, first, second, first, second, first)
            ]
    codes = [answer.status_code for answer in statuses]
    assert codes == [201] * 5 + [429, 429], codes
    assert statuses[-1].headers["ratelimit-policy"] == '"purchase";q=5;w=3600'
