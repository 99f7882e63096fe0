"""Caps on a customer's holds (OWASP API6): active at once, and given up per hour.

On both databases and booking paths, with the app's clock moved by the test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.services import holds as hold_service
from boxoffice.services.clock import FakeClock
from tests.api.conftest import assert_problem
from tests.support.keys import bearer

pytestmark = pytest.mark.parametrize("booking_strategy", ["direct", "batched"])


class Shop:
    def __init__(self, http: httpx.AsyncClient, clock: FakeClock, database: Database) -> None:
        self.http = http
        self.clock = clock
        self.database = database
        self.admin: dict[str, str] = {}
        self.alice: dict[str, str] = {}

    async def event(self) -> dict[str, Any]:
        made = await self.http.post(
            "/events",
            json={"name": "Gig", "sections": [{"name": "GA", "price": 5, "capacity": 50}]},
            headers=self.admin,
        )
        assert made.status_code == 201, made.text
        return dict(made.json())

    async def hold(
        self, event: dict[str, Any], headers: dict[str, str] | None = None, **extra: Any
    ) -> httpx.Response:
        body = {
            "eventId": event["id"],
            "items": [{"sectionId": event["sections"][0]["id"], "qty": 1}],
        }
        return await self.http.post("/holds", json={**body, **extra}, headers=headers or self.alice)

    async def held(self, event: dict[str, Any]) -> int:
        answer = await self.http.get(f"/events/{event['id']}")
        return int(answer.json()["sections"][0]["held"])


@pytest.fixture
def serve(settings: Settings, database: Database) -> Any:
    def started(**caps: int) -> Any:
        clock = FakeClock()
        quiet = settings.model_copy(update={"hold_sweep_interval_seconds": 0, **caps})
        app = create_app(quiet, database, clock=clock)

        class Running:
            async def __aenter__(self) -> Shop:
                self.lifespan = app.router.lifespan_context(app)
                await self.lifespan.__aenter__()
                transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
                self.http = httpx.AsyncClient(transport=transport, base_url="http://test")
                shop = Shop(self.http, clock, database)
                shop.admin = await bearer(database)
                shop.alice = await bearer(database, "customer", customer_id="alice")
                return shop

            async def __aexit__(self, *exc: object) -> None:
                await self.http.aclose()
                await self.lifespan.__aexit__(None, None, None)

        return Running()

    return started


async def test_active_holds_are_capped_per_customer_across_events(serve: Any) -> None:
    async with serve(max_active_holds_per_customer=2, max_hold_churn_per_hour=0) as shop:
        first, second = await shop.event(), await shop.event()
        one = await shop.hold(first)
        two = await shop.hold(second)
        assert (one.status_code, two.status_code) == (201, 201)
        refused = await shop.hold(first)
        problem = assert_problem(refused, 409, "active_hold_limit")
        assert problem["limit"] == 2
        assert await shop.held(first) == 1  # the refused hold took nothing
        # Other customers are not touched.
        bob = await bearer(shop.database, "customer", customer_id="bob")
        assert (await shop.hold(first, bob)).status_code == 201
        # A confirmed hold is no longer active: room for one more.
        confirmed = await shop.http.post(
            f"/holds/{one.json()['id']}/confirm", json={}, headers=shop.alice
        )
        assert confirmed.status_code == 201, confirmed.text
        three = await shop.hold(first, ttlSeconds=60)
        assert three.status_code == 201
        assert_problem(await shop.hold(first), 409, "active_hold_limit")
        # A hold past its expiry is not active either, swept or not.
        shop.clock.advance(61)
        assert (await shop.hold(first)).status_code == 201


async def test_an_organizer_holding_for_a_customer_counts_against_that_customer(
    serve: Any,
) -> None:
    async with serve(max_active_holds_per_customer=1, max_hold_churn_per_hour=0) as shop:
        organizer = await bearer(shop.database, "organizer")
        made = await shop.http.post(
            "/events",
            json={"name": "Box office", "sections": [{"name": "GA", "price": 5, "capacity": 9}]},
            headers=organizer,
        )
        event = made.json()
        assert (await shop.hold(event, organizer, customerId="carol")).status_code == 201
        refused = await shop.hold(event, organizer, customerId="carol")
        assert_problem(refused, 409, "active_hold_limit")
        # A hold for no named customer is nobody's to cap.
        assert (await shop.hold(event, organizer)).status_code == 201
        assert (await shop.hold(event, organizer)).status_code == 201


async def test_holds_given_up_in_the_last_hour_are_capped(serve: Any) -> None:
    async with serve(max_active_holds_per_customer=0, max_hold_churn_per_hour=2) as shop:
        event = await shop.event()
        placed = await shop.hold(event)
        released = await shop.http.delete(f"/holds/{placed.json()['id']}", headers=shop.alice)
        assert released.status_code == 204
        shop.clock.advance(600)
        assert (await shop.hold(event, ttlSeconds=30)).status_code == 201
        shop.clock.advance(31)  # that one lapses: given up too
        refused = await shop.hold(event)
        problem = assert_problem(refused, 429, "hold_churn_limit")
        assert problem["limit"] == 2
        # Until the first give-up is an hour old: 3600 - 631 s from now.
        assert refused.headers["retry-after"] == str(3600 - 631)
        assert await shop.held(event) == 0
        shop.clock.advance(3600 - 631)
        assert (await shop.hold(event)).status_code == 201


async def test_a_retried_hold_is_replayed_even_at_the_cap(serve: Any) -> None:
    async with serve(max_active_holds_per_customer=1, max_hold_churn_per_hour=0) as shop:
        event = await shop.event()
        key = {**shop.alice, "Idempotency-Key": "checkout-1"}
        first = await shop.hold(event, key)
        again = await shop.hold(event, key)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json()["id"] == first.json()["id"]
        other = {**shop.alice, "Idempotency-Key": "checkout-2"}
        assert_problem(await shop.hold(event, other), 409, "active_hold_limit")
        assert await shop.held(event) == 1


async def test_a_hold_refused_at_the_cap_is_neither_stored_nor_audited(serve: Any) -> None:
    """Refused before it reached the inventory, like a rate limit: the same key goes
    through once the customer has a hold free, and the trail records what the
    inventory did, not requests turned away at the door."""
    async with serve(max_active_holds_per_customer=1, max_hold_churn_per_hour=0) as shop:
        event = await shop.event()
        first = await shop.hold(event)
        key = {**shop.alice, "Idempotency-Key": "checkout-2"}
        assert_problem(await shop.hold(event, key), 409, "active_hold_limit")
        trail = await shop.http.get(f"/events/{event['id']}/audit", headers=shop.admin)
        assert [record["action"] for record in trail.json()] == ["create", "hold"]
        released = await shop.http.delete(f"/holds/{first.json()['id']}", headers=shop.alice)
        assert released.status_code == 204
        retried = await shop.hold(event, key)
        assert retried.status_code == 201, retried.text
        assert (await shop.hold(event, key)).json()["id"] == retried.json()["id"]
        assert await shop.held(event) == 1


async def test_the_caps_of_customers_holding_at_once_are_read_together_each_its_own(
    serve: Any,
) -> None:
    """Hold records are read in one query for the customers of a burst
    (services/coalesced.py): each customer still gets its own record."""
    async with serve(max_active_holds_per_customer=1, max_hold_churn_per_hour=0) as shop:
        event = await shop.event()
        capped = [await bearer(shop.database, "customer", customer_id=f"c{n}") for n in range(6)]
        fresh = [await bearer(shop.database, "customer", customer_id=f"new{n}") for n in range(6)]
        for who in capped:
            assert (await shop.hold(event, who)).status_code == 201
        answers = await asyncio.gather(*(shop.hold(event, who) for who in capped + fresh))
        assert [answer.status_code for answer in answers] == [409] * 6 + [201] * 6
        assert await shop.held(event) == 12


async def test_hold_records_read_together_are_each_customers_own(serve: Any) -> None:
    async with serve(max_active_holds_per_customer=0, max_hold_churn_per_hour=0) as shop:
        event = await shop.event()
        bob = await bearer(shop.database, "customer", customer_id="bob")
        for who, ttl in ((shop.alice, 60), (shop.alice, 600), (bob, 30)):
            assert (await shop.hold(event, who, ttlSeconds=ttl)).status_code == 201
        shop.clock.advance(45)  # bob's lapses: given up
        records = await hold_service.hold_records(
            shop.database, ["nobody", "alice", "bob", "alice"], shop.clock()
        )
        assert [(r.active, r.churned) for r in records] == [(0, 0), (2, 0), (0, 1), (2, 0)]
        assert records[2].oldest_churn is not None
        assert records[0].oldest_churn is None
