"""Fraud flags over HTTP: raised by what callers do, blocking nothing, stored, and shown to
the event's organizer and to admins only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.observability import metrics
from boxoffice.services.flags import FlagDesk
from tests.api.conftest import assert_problem
from tests.support.keys import bearer

SENSITIVE = {
    "max_tickets_per_booking": 4,
    "flag_max_quantity_repeats": 2,
    "flag_refusals": 3,
    "flag_hold_churn": 2,
    "flag_customers_per_address": 2,
}


@pytest.fixture
async def app(settings: Settings, database: Database) -> AsyncIterator[FastAPI]:
    built = create_app(settings.model_copy(update=SENSITIVE), database)
    async with built.router.lifespan_context(built):
        yield built


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def make_event(http: httpx.AsyncClient, organizer: dict[str, str]) -> Any:
    made = await http.post(
        "/events",
        json={"name": "Gig", "sections": [{"name": "GA", "price": 5, "capacity": 100}]},
        headers=organizer,
    )
    assert made.status_code == 201, made.text
    return made.json()


def flagged(rule: str) -> float:
    metrics.flush()  # counts reach prometheus-client at a flush
    return REGISTRY.get_sample_value("boxoffice_fraud_flags_total", {"rule": rule}) or 0.0


async def test_patterns_are_flagged_stored_and_shown_to_whom_they_concern(
    app: FastAPI, http: httpx.AsyncClient, database: Database
) -> None:
    admin = await bearer(database)
    organizer_x = await bearer(database, "organizer")
    organizer_y = await bearer(database, "organizer")
    alice = await bearer(database, "customer", customer_id="alice")
    bob = await bearer(database, "customer", customer_id="bob")
    carol = await bearer(database, "customer", customer_id="carol")
    before = {rule: flagged(rule) for rule in ("max_quantity_repeat", "many_refusals")}
    event = await make_event(http, organizer_x)
    section = event["sections"][0]["id"]
    book = {"eventId": event["id"], "sectionId": section, "qty": 4}

    # The maximum, twice: flagged, and both bookings go through all the same.
    for _ in range(2):
        assert (await http.post("/book", json=book, headers=alice)).status_code == 201
    # A second customer from the same address.
    assert (await http.post("/book", json={**book, "qty": 1}, headers=bob)).status_code == 201
    # Holds given up, then another hold.
    hold = {"eventId": event["id"], "items": [{"sectionId": section, "qty": 1}]}
    for _ in range(2):
        placed = await http.post("/holds", json=hold, headers=carol)
        assert placed.status_code == 201
        gone = await http.delete(f"/holds/{placed.json()['id']}", headers=carol)
        assert gone.status_code == 204
    assert (await http.post("/holds", json=hold, headers=carol)).status_code == 201
    # Guessed keys from one address.
    for n in range(3):
        bad = {"Authorization": f"Bearer bo_live_{n:016x}_guess"}
        assert (await http.get("/bookings", headers=bad)).status_code == 401

    desk: FlagDesk = app.state.flags
    await desk.flush()

    mine = await http.get(f"/events/{event['id']}/flags", headers=organizer_x)
    assert mine.status_code == 200, mine.text
    rules = {flag["rule"]: flag for flag in mine.json()}
    # Customers seen at one address span events: that flag is an admin's, tied to none.
    assert set(rules) == {"max_quantity_repeat", "hold_churn"}
    assert rules["max_quantity_repeat"]["customerId"] == "alice"
    assert rules["max_quantity_repeat"]["evidence"]["count"] == 2
    assert rules["max_quantity_repeat"]["eventId"] == event["id"]
    assert rules["hold_churn"]["customerId"] == "carol"
    assert rules["hold_churn"]["evidence"] == {"givenUpLastHour": 2}
    assert "guess" not in mine.text

    # Nobody else's to see.
    assert_problem(
        await http.get(f"/events/{event['id']}/flags", headers=organizer_y), 404, "not_found"
    )
    assert_problem(await http.get(f"/events/{event['id']}/flags", headers=alice), 403, "forbidden")
    assert_problem(await http.get("/flags", headers=organizer_x), 403, "forbidden")

    everything = await http.get("/flags", headers=admin)
    assert {flag["rule"] for flag in everything.json()} == {
        "max_quantity_repeat",
        "shared_address",
        "hold_churn",
        "many_refusals",
    }
    refusals = await http.get("/flags?rule=many_refusals", headers=admin)
    [refused] = refusals.json()
    assert refused["eventId"] is None
    assert refused["keyId"] is None
    assert refused["address"] == "127.0.0.1"
    assert refused["evidence"]["count"] == 3
    [shared] = (await http.get("/flags?rule=shared_address", headers=admin)).json()
    assert shared["eventId"] is None
    assert shared["evidence"]["customers"] == ["alice", "bob"]
    first = await http.get("/flags?limit=1", headers=admin)
    assert len(first.json()) == 1
    assert 'rel="next"' in first.headers["link"]
    only_alice = await http.get("/flags?customerId=alice", headers=admin)
    assert [flag["rule"] for flag in only_alice.json()] == ["max_quantity_repeat"]
    assert flagged("max_quantity_repeat") == before["max_quantity_repeat"] + 1
    assert flagged("many_refusals") == before["many_refusals"] + 1
    assert_problem(await http.get("/flags?rule=nonsense", headers=admin), 400, "validation_error")


async def test_with_flags_off_nothing_is_watched(settings: Settings, database: Database) -> None:
    app = create_app(
        settings.model_copy(update={**SENSITIVE, "fraud_flags_enabled": False}), database
    )
    async with app.router.lifespan_context(app):
        assert app.state.flags is None
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            organizer = await bearer(database, "organizer")
            event = await make_event(http, organizer)
            alice = await bearer(database, "customer", customer_id="alice")
            book = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 4}
            for _ in range(3):
                assert (await http.post("/book", json=book, headers=alice)).status_code == 201
            listed = await http.get(f"/events/{event['id']}/flags", headers=organizer)
            assert listed.json() == []
