"""Rate limits over HTTP: per key and per address, per route class, 429 with the headers.

Local (per-process) buckets here; sharing them through Redis between processes is
tests/e2e/test_rate_limits_redis.py.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.services.keys import KEY_PREFIX
from boxoffice.services.rate_limits import Quota
from tests.api.conftest import assert_problem
from tests.support.keys import bearer

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve(settings: Settings, database: Database) -> Serve:
    """The app with some settings changed, and a client without a key."""

    @asynccontextmanager
    async def started(
        client: tuple[str, int] = ("203.0.113.7", 5000), **changes: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings.model_copy(update=changes), database)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield http

    return started


async def make_event(http: httpx.AsyncClient, admin: dict[str, str], capacity: int = 100) -> Any:
    response = await http.post(
        "/events",
        json={"name": "Gig", "sections": [{"name": "GA", "price": 5, "capacity": capacity}]},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_customer_key_past_its_purchase_quota_gets_429_and_books_nothing(
    serve: Serve, database: Database
) -> None:
    admin = await bearer(database)
    alice = await bearer(database, "customer", customer_id="alice")
    async with serve(rate_limit_purchase=Quota(3, 60)) as http:
        event = await make_event(http, admin)
        book = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 1}
        answers = [await http.post("/book", json=book, headers=alice) for _ in range(4)]
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        assert [a.headers["ratelimit"] for a in answers[:3]] == [
            '"purchase";r=2;t=20',
            '"purchase";r=1;t=40',
            '"purchase";r=0;t=60',
        ]
        refused = answers[3]
        assert_problem(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "20"
        assert refused.headers["ratelimit-policy"] == '"purchase";q=3;w=60'
        assert refused.headers["ratelimit"] == '"purchase";r=0;t=60'
        seats = (await http.get(f"/events/{event['id']}")).json()["sections"][0]["remaining"]
        assert seats == 97  # the refused request took nothing
        # Holds draw on the same quota; reads and other customers are not touched.
        hold = {"eventId": event["id"], "items": [{"sectionId": book["sectionId"], "qty": 1}]}
        assert (await http.post("/holds", json=hold, headers=alice)).status_code == 429
        assert (await http.get("/bookings", headers=alice)).status_code == 200
        bob = await bearer(database, "customer", customer_id="bob")
        assert (await http.post("/book", json=book, headers=bob)).status_code == 201


async def test_organizer_and_admin_keys_get_the_staff_factor(
    serve: Serve, database: Database
) -> None:
    admin = await bearer(database)
    async with serve(rate_limit_write=Quota(1, 60), rate_limit_staff_factor=3) as http:
        answers = [
            await http.post(
                "/events",
                json={"name": "E", "sections": [{"name": "A", "price": 1, "capacity": 1}]},
                headers=admin,
            )
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        assert answers[0].headers["ratelimit-policy"] == '"write";q=3;w=60'


async def test_the_public_is_limited_by_address_and_health_checks_never(
    serve: Serve, database: Database
) -> None:
    admin = await bearer(database)
    async with serve(rate_limit_read=Quota(2, 60)) as http:
        event = await make_event(http, admin)  # a write: its own class
        statuses = [(await http.get(f"/events/{event['id']}")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        for _ in range(5):
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
        # A key has a bucket of its own, apart from its address's.
        assert (await http.get("/events", headers=admin)).status_code == 200
    async with serve(rate_limit_read=Quota(2, 60), client=("198.51.100.1", 1)) as other:
        assert (await other.get(f"/events/{event['id']}")).status_code == 200


async def test_guessing_keys_gets_401_then_429_and_no_guess_gets_in(
    serve: Serve, database: Database
) -> None:
    """Brute force: 1,000 random well-formed keys from one address."""
    admin = await bearer(database)
    async with serve(rate_limit_auth_failures=Quota(20, 60)) as http:
        assert (await http.get("/bookings", headers=admin)).status_code == 200
        started = time.monotonic()
        statuses: Counter[int] = Counter()
        for _ in range(1000):
            guess = f"{KEY_PREFIX}{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
            answer = await http.get("/bookings", headers={"Authorization": f"Bearer {guess}"})
            statuses[answer.status_code] += 1
            if answer.status_code == 429:
                assert_problem(answer, 429, "rate_limited")
                assert int(answer.headers["retry-after"]) >= 1
                # Refused without a lookup, the address blocked: the headers all the same.
                assert answer.headers["ratelimit-policy"] == '"auth";q=20;w=60'
                assert answer.headers["ratelimit"].startswith('"auth";r=0;t=')
        elapsed = time.monotonic() - started
        assert set(statuses) == {401, 429}
        # 20 at once, then one more every 3 s at most.
        assert 20 <= statuses[401] <= 20 + elapsed / 3 + 1
        # A key this process knows is not held up by its address; one it would have to
        # look up waits, like the guesses, until the address's bucket has room again.
        assert (await http.get("/bookings", headers=admin)).status_code == 200
        other_admin = await bearer(database)
        assert (await http.get("/bookings", headers=other_admin)).status_code == 429


async def test_refusals_are_counted_in_the_metrics(serve: Serve, database: Database) -> None:
    admin = await bearer(database)

    def refused() -> float:
        return (
            REGISTRY.get_sample_value(
                "boxoffice_rate_limited_requests_total", {"route_class": "keys"}
            )
            or 0.0
        )

    before = refused()
    async with serve(rate_limit_keys=Quota(1, 60), rate_limit_staff_factor=1) as http:
        assert (await http.get("/keys", headers=admin)).status_code == 200
        assert (await http.get("/keys", headers=admin)).status_code == 429
        metrics = await http.get("/metrics", headers=admin)
        assert metrics.status_code == 200
        assert re.search(
            r'^boxoffice_rate_limited_requests_total\{route_class="keys"\} [1-9]',
            metrics.text,
            re.MULTILINE,
        )
    assert refused() == before + 1


async def test_metrics_need_an_admin_key(serve: Serve, database: Database) -> None:
    customer = await bearer(database, "customer", customer_id="c")
    async with serve() as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=customer)).status_code == 403


async def test_with_rate_limits_off_nothing_is_limited_and_no_header_is_sent(
    serve: Serve, database: Database
) -> None:
    admin = await bearer(database)
    async with serve(rate_limits_enabled=False, rate_limit_read=Quota(1, 60)) as http:
        answers = [await http.get("/events", headers=admin) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert "ratelimit" not in answers[0].headers


async def test_a_class_set_off_is_not_limited(serve: Serve, database: Database) -> None:
    admin = await bearer(database)
    async with serve(rate_limit_read=None) as http:
        answers = [await http.get("/events", headers=admin) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert "ratelimit" not in answers[0].headers
