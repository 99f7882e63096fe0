"""GET /metrics after a sale: every metric the service promises, counting what happened
(by route template, never a raw path), on both databases and both booking paths."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.db.tables import bookings
from boxoffice.services.clock import FakeClock
from boxoffice.services.rate_limits import Quota
from boxoffice.services.unit_of_work import UnitOfWork
from tests.api.conftest import EVENT, assert_problem
from tests.support.keys import bearer

pytestmark = pytest.mark.parametrize("booking_strategy", ["direct", "batched"])

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Every metric the service exports, by the name its samples carry.
EXPORTED = {
    "boxoffice_http_request_duration_seconds_bucket",
    "boxoffice_http_request_duration_seconds_count",
    "boxoffice_http_request_duration_seconds_sum",
    "boxoffice_refusals_total",
    "boxoffice_bookings_total",
    "boxoffice_tickets_sold_total",
    "boxoffice_holds_placed_total",
    "boxoffice_holds_confirmed_total",
    "boxoffice_holds_released_total",
    "boxoffice_holds_expired_total",
    "boxoffice_bookings_cancelled_total",
    "boxoffice_batch_commands_bucket",
    "boxoffice_batch_commands_count",
    "boxoffice_batch_commit_duration_seconds_bucket",
    "boxoffice_batch_commit_duration_seconds_count",
    "boxoffice_booking_queue_timeouts_total",
    "boxoffice_committer_restarts_total",
    "boxoffice_database_pool_checked_out_connections",
    "boxoffice_database_pool_size_connections",
    "boxoffice_database_up",
    "boxoffice_database_server_changes_total",
    "boxoffice_section_seats",
    "boxoffice_section_capacity_seats",
    "boxoffice_inventory_violations",
    "boxoffice_inventory_checked_timestamp_seconds",
    "boxoffice_rate_limited_requests_total",
    "boxoffice_rate_limit_fallbacks_total",
    "boxoffice_rate_limits_shared",
}  # and boxoffice_fraud_flags_total{rule}, from the first flag (tests/api/test_flags.py)


@asynccontextmanager
async def serving(
    settings: Settings, database: Database, clock: FakeClock, **changes: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (no sweeper, no sampling task: the test runs both) and a client without a key."""
    quiet = settings.model_copy(
        update={"hold_sweep_interval_seconds": 0, "metrics_sample_seconds": 0, **changes}
    )
    app = create_app(quiet, database, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield app, http


async def scrape(http: httpx.AsyncClient, admin: dict[str, str]) -> Series:
    answer = await http.get("/metrics", headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


async def test_every_metric_counts_a_sale(
    settings: Settings, database: Database, booking_strategy: str
) -> None:
    admin = await bearer(database)
    clock = FakeClock()
    async with serving(
        settings,
        database,
        clock,
        rate_limits_enabled=True,
        rate_limit_keys=Quota(1, 60),
        rate_limit_staff_factor=1,
    ) as (app, http):
        before = await scrape(http, admin)
        made = await http.post("/events", json=EVENT, headers=admin)
        event = made.json()
        vip, ga = (section["id"] for section in event["sections"])  # 5 and 100 seats

        def book(section: str, qty: int) -> dict[str, Any]:
            return {"eventId": event["id"], "sectionId": section, "qty": qty}

        def hold(section: str, qty: int) -> dict[str, Any]:
            items = [{"sectionId": section, "qty": qty}]
            return {"eventId": event["id"], "items": items, "ttlSeconds": 60}

        booked = await http.post("/book", json=book(ga, 2), headers=admin)
        assert booked.status_code == 201
        assert_problem(
            await http.post("/book", json=book(vip, 6), headers=admin), 400, "insufficient_seats"
        )
        paid = (await http.post("/holds", json=hold(vip, 2), headers=admin)).json()["id"]
        confirmed = await http.post(f"/holds/{paid}/confirm", json={}, headers=admin)
        assert confirmed.status_code == 201
        given_up = (await http.post("/holds", json=hold(ga, 1), headers=admin)).json()["id"]
        assert (await http.delete(f"/holds/{given_up}", headers=admin)).status_code == 204
        assert (await http.post("/holds", json=hold(ga, 3), headers=admin)).status_code == 201
        clock.advance(61)
        assert await app.state.sweeper.sweep() == 3
        cancel = f"/bookings/{booked.json()['id']}/cancel"
        assert (await http.post(cancel, headers=admin)).status_code == 200
        assert_problem(await http.get("/no/such/page", headers=admin), 404, "not_found")
        assert_problem(await http.post("/book", json=book(ga, 1)), 401, "unauthorized")
        assert (await http.get("/keys", headers=admin)).status_code == 200
        assert_problem(await http.get("/keys", headers=admin), 429, "rate_limited")
        await app.state.exporter.sample()
        after = await scrape(http, admin)

    missing = EXPORTED - {name for name, _ in after}
    assert not missing, f"not exported: {sorted(missing)}"

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("boxoffice_bookings_total") == 2  # booked, and the confirmed hold's item
    assert grew("boxoffice_tickets_sold_total") == 4
    assert grew("boxoffice_holds_placed_total") == 3
    assert grew("boxoffice_holds_confirmed_total") == 1
    assert grew("boxoffice_holds_released_total") == 1
    assert grew("boxoffice_holds_expired_total") == 1
    assert grew("boxoffice_bookings_cancelled_total") == 1
    for code in ("insufficient_seats", "not_found", "unauthorized", "rate_limited"):
        assert grew("boxoffice_refusals_total", code=code) == 1, code
    assert grew("boxoffice_rate_limited_requests_total", route_class="keys") == 1
    # Eight commands one after the other: eight batches of one (the sweeper has its own).
    batches = 8 if booking_strategy == "batched" else 0
    assert grew("boxoffice_batch_commands_count") == batches
    assert grew("boxoffice_batch_commands_bucket", le="1.0") == batches
    assert grew("boxoffice_batch_commit_duration_seconds_count") == batches

    def answered(route: str, method: str, status: int) -> float:
        name = "boxoffice_http_request_duration_seconds_count"
        return grew(name, route=route, method=method, status=str(status))

    # Route templates, never raw paths: a hold's id is not a label, an unknown path is one.
    assert answered("/holds/{hold_id}/confirm", "POST", 201) == 1
    assert answered("/book", "POST", 201) == 1
    assert answered("/book", "POST", 400) == 1
    assert answered("/book", "POST", 401) == 1  # refused before any routing
    assert answered("unmatched", "GET", 404) == 1
    routes = {dict(labels)["route"] for _, labels in after if "route" in dict(labels)}
    assert not [route for route in routes if paid in route or route == "/no/such/page"]

    # The inventory as read at the last look, and nothing wrong with it.
    def seats(section: str, state: str) -> float:
        name = next(s["name"] for s in event["sections"] if s["id"] == section)
        return value(
            after,
            "boxoffice_section_seats",
            event_id=event["id"],
            section_id=section,
            section=name,
            state=state,
        )

    assert [seats(vip, state) for state in ("remaining", "held", "sold")] == [3, 0, 2]
    assert [seats(ga, state) for state in ("remaining", "held", "sold")] == [100, 0, 0]
    assert value(after, "boxoffice_inventory_violations") == 0
    assert value(after, "boxoffice_database_up") == 1
    pools = {
        dict(labels)["pool"] for name, labels in after if name.startswith("boxoffice_database_pool")
    }
    assert pools == ({"shared"} if database.dialect == "sqlite" else {"readers", "writers"})


async def test_a_section_whose_seats_disagree_with_its_bookings_is_a_violation(
    settings: Settings, database: Database
) -> None:
    admin = await bearer(database)
    clock = FakeClock()
    async with serving(settings, database, clock, metrics_inventory_sections=1) as (app, http):
        older = (await http.post("/events", json=EVENT, headers=admin)).json()
        clock.advance(1)
        newer = (await http.post("/events", json=EVENT, headers=admin)).json()
        section = newer["sections"][0]["id"]
        booked = await http.post(
            "/book", json={"eventId": newer["id"], "sectionId": section, "qty": 2}, headers=admin
        )
        assert booked.status_code == 201
        await app.state.exporter.sample()
        clean = await scrape(http, admin)
        # A booking lost behind the service's back: its seats are sold to no one.
        async with UnitOfWork(database, write=True) as uow:
            lost = uuid.UUID(booked.json()["id"])
            await uow.conn.execute(delete(bookings).where(bookings.c.id == lost))
            await uow.commit()
        await app.state.exporter.sample()
        broken = await scrape(http, admin)

    assert value(clean, "boxoffice_inventory_violations") == 0
    assert value(broken, "boxoffice_inventory_violations") == 1
    watched = {
        dict(labels)["section_id"] for name, labels in broken if name == "boxoffice_section_seats"
    }
    # One section watched: the newest event's first; nothing of the older event.
    assert section in watched
    assert not watched & {s["id"] for s in older["sections"]}
