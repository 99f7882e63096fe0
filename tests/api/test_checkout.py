"""Checkout over HTTP (holds, confirm, release, cancel, idempotency keys, customer caps,
the audit trail), on SQLite and PostgreSQL, with the app's clock moved by the test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.services.clock import FakeClock
from tests.api.conftest import EVENT, assert_problem, create
from tests.support.keys import bearer

pytestmark = pytest.mark.parametrize("booking_strategy", ["direct", "batched"])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(
    settings: Settings, database: Database, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    quiet = settings.model_copy(update={"hold_sweep_interval_seconds": 0})  # no sweeper
    app = create_app(quiet, database, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = await bearer(database)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            yield http


def hold_body(event: dict[str, Any], *qtys: int, **extra: Any) -> dict[str, Any]:
    items = [
        {"sectionId": section["id"], "qty": qty}
        for section, qty in zip(event["sections"], qtys, strict=False)
        if qty
    ]
    return {"eventId": event["id"], "items": items, **extra}


async def counts(client: httpx.AsyncClient, event: dict[str, Any]) -> list[tuple[int, int, int]]:
    sections = (await client.get(f"/events/{event['id']}")).json()["sections"]
    return [(s["remaining"], s["held"], s["sold"]) for s in sections]


async def test_hold_confirm_and_the_seats_on_the_way(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    event = await create(client)  # VIP 5 at 49.99, GA 100 at 10
    response = await client.post("/holds", json=hold_body(event, 2, 3, customerId="cust-1"))
    assert response.status_code == 201, response.text
    hold = response.json()
    assert response.headers["location"] == f"/holds/{hold['id']}"
    assert set(hold) == {
        "id", "eventId", "items", "totalPrice", "customerId", "status", "expiresAt", "createdAt",
    }  # fmt: skip
    assert hold["items"] == [
        {
            "sectionId": event["sections"][0]["id"],
            "qty": 2,
            "unitPrice": 49.99,
            "totalPrice": 99.98,
        },
        {"sectionId": event["sections"][1]["id"], "qty": 3, "unitPrice": 10, "totalPrice": 30},
    ]
    assert (hold["totalPrice"], hold["status"], hold["customerId"]) == (129.98, "active", "cust-1")
    assert await counts(client, event) == [(3, 2, 0), (97, 3, 0)]
    assert (await client.get(f"/holds/{hold['id']}")).json() == hold

    clock.advance(300)
    confirmed = await client.post(
        f"/holds/{hold['id']}/confirm", json={"paymentReference": "pi_3MtwBwLkdIwHu7ix28a3tqPa"}
    )
    assert confirmed.status_code == 201, confirmed.text
    body = confirmed.json()
    assert body["hold"]["status"] == "confirmed"
    reference = "pi_3MtwBwLkdIwHu7ix28a3tqPa"
    assert [
        (b["qty"], b["holdId"], b["paymentReference"], b["customerId"]) for b in body["bookings"]
    ] == [(2, hold["id"], reference, "cust-1"), (3, hold["id"], reference, "cust-1")]
    assert await counts(client, event) == [(3, 0, 2), (97, 0, 3)]
    confirm_again = await client.post(f"/holds/{hold['id']}/confirm")
    again = assert_problem(confirm_again, 409, "hold_not_active")
    assert again["holdStatus"] == "confirmed"
    assert_problem(await client.delete(f"/holds/{hold['id']}"), 409, "hold_not_active")
    listed = (await client.get("/bookings", params={"customerId": "cust-1"})).json()
    assert {b["id"] for b in listed} == {b["id"] for b in body["bookings"]}


async def test_an_expired_hold_frees_its_seats_for_every_reader(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    event = await create(client)
    hold = (await client.post("/holds", json=hold_body(event, 5, ttlSeconds=30))).json()
    assert hold["expiresAt"].startswith("2026-12-01T20:00:30")
    assert await counts(client, event) == [(0, 5, 0), (100, 0, 0)]
    vip = {"eventId": event["id"], "sectionId": event["sections"][0]["id"]}
    assert_problem(await client.post("/book", json={**vip, "qty": 1}), 400, "insufficient_seats")
    clock.advance(30)
    assert await counts(client, event) == [(5, 0, 0), (100, 0, 0)]
    assert (await client.get(f"/holds/{hold['id']}")).json()["status"] == "expired"
    assert_problem(await client.post(f"/holds/{hold['id']}/confirm"), 409, "hold_expired")
    booked = await client.post("/book", json={**vip, "qty": 5})
    assert booked.status_code == 201, booked.text
    assert await counts(client, event) == [(0, 0, 5), (100, 0, 0)]


async def test_release_is_204_twice_and_unknown_holds_are_404(client: httpx.AsyncClient) -> None:
    event = await create(client)
    hold = (await client.post("/holds", json=hold_body(event, 1, 1))).json()
    for _ in range(2):
        released = await client.delete(f"/holds/{hold['id']}")
        assert released.status_code == 204
        assert released.content == b""
    assert await counts(client, event) == [(5, 0, 0), (100, 0, 0)]
    assert (await client.get(f"/holds/{hold['id']}")).json()["status"] == "released"
    for unknown in (str(uuid.uuid4()), "nope"):
        assert_problem(await client.delete(f"/holds/{unknown}"), 404, "not_found")
        assert_problem(await client.get(f"/holds/{unknown}"), 404, "not_found")
        assert_problem(await client.post(f"/holds/{unknown}/confirm"), 404, "not_found")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ttlSeconds": 29}, "ttlSeconds"),
        ({"ttlSeconds": 3601}, "ttlSeconds"),
        ({"ttlSeconds": "60"}, "ttlSeconds"),
        ({"items": []}, "items"),
        ({"customerId": "has space"}, "customerId"),
        ({"customerId": "x" * 129}, "customerId"),
        ({"customerId": ""}, "customerId"),
        ({"status": "confirmed"}, "status"),
        ({"expiresAt": "2030-01-01T00:00:00Z"}, "expiresAt"),
    ],
)
async def test_bad_holds_are_400_and_hold_nothing(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    event = await create(client)
    body = {**hold_body(event, 1), **change}
    problem = assert_problem(await client.post("/holds", json=body), 400, "validation_error")
    assert any(error["field"].startswith(field) for error in problem["errors"]), problem
    assert await counts(client, event) == [(5, 0, 0), (100, 0, 0)]


async def test_hold_quantities_are_limited_per_item_and_in_all(client: httpx.AsyncClient) -> None:
    event = await create(client)
    section = event["sections"][1]["id"]
    too_many = {"eventId": event["id"], "items": [{"sectionId": section, "qty": 11}]}
    assert_problem(await client.post("/holds", json=too_many), 400, "validation_error")
    together = hold_body(event, 5, 6)
    assert_problem(await client.post("/holds", json=together), 400, "validation_error")
    twice = {"eventId": event["id"], "items": [{"sectionId": section, "qty": 1}] * 2}
    assert_problem(await client.post("/holds", json=twice), 400, "validation_error")
    spelt_twice = {
        "eventId": event["id"],
        "items": [{"sectionId": section, "qty": 1}, {"sectionId": section.upper(), "qty": 1}],
    }
    assert_problem(await client.post("/holds", json=spelt_twice), 400, "validation_error")
    hold = (await client.post("/holds", json=hold_body(event, 1))).json()
    for reference in ("p" * 256, "pi_\u0000", "pi\n1"):
        assert_problem(
            await client.post(f"/holds/{hold['id']}/confirm", json={"paymentReference": reference}),
            400,
            "validation_error",
        )
    assert await counts(client, event) == [(4, 1, 0), (100, 0, 0)]


async def test_cancel_returns_the_cancelled_booking_and_repeats_harmlessly(
    client: httpx.AsyncClient,
) -> None:
    event = await create(client)
    body = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 2}
    booking = (await client.post("/book", json={**body, "customerId": "c9"})).json()
    first = await client.post(f"/bookings/{booking['id']}/cancel")
    second = await client.post(f"/bookings/{booking['id']}/cancel")
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["status"] == "cancelled"
    assert first.json()["cancelledAt"]
    assert await counts(client, event) == [(5, 0, 0), (100, 0, 0)]
    listed = (await client.get("/bookings", params={"customerId": "c9"})).json()
    assert [(b["id"], b["status"]) for b in listed] == [(booking["id"], "cancelled")]
    assert_problem(await client.post(f"/bookings/{uuid.uuid4()}/cancel"), 404, "not_found")


async def test_idempotency_keys_over_http(client: httpx.AsyncClient) -> None:
    event = await create(client)
    body = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 2}
    headers = {"Idempotency-Key": "order-7 attempt"}
    first = await client.post("/book", json=body, headers=headers)
    retry = await client.post("/book", json=body, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert first.json() == retry.json()
    assert retry.headers["location"] == first.headers["location"]
    reused = await client.post("/book", json={**body, "qty": 1}, headers=headers)
    assert_problem(reused, 422, "idempotency_key_reused")
    refused_body = {**body, "qty": 4}
    refusal = {"Idempotency-Key": "refused"}
    for _ in range(2):
        refused = await client.post("/book", json=refused_body, headers=refusal)
        assert_problem(refused, 400, "insufficient_seats")
        assert refused.json()["remaining"] == 3
    for bad in ("", "k" * 256):
        problem = assert_problem(
            await client.post("/book", json=body, headers={"Idempotency-Key": bad}),
            400,
            "validation_error",
        )
        assert problem["errors"][0]["field"] == "Idempotency-Key"
    non_ascii = {"Idempotency-Key": "clé".encode("latin-1")}
    assert_problem(
        await client.post("/book", json=body, headers=non_ascii),  # type: ignore[arg-type]
        400,
        "validation_error",
    )
    assert await counts(client, event) == [(3, 0, 2), (100, 0, 0)]

    # A payment reference beyond ASCII, stored with the answer and replayed as it was sent
    # (PostgreSQL's batch sends it as UTF-8 JSON, SQLite's as escaped JSON).
    hold = await client.post(
        "/holds",
        json=hold_body(event, 0, 1, customerId="zoe-7"),
        headers={"Idempotency-Key": "h-1"},
    )
    assert hold.status_code == 201, hold.text
    path, key = f"/holds/{hold.json()['id']}/confirm", {"Idempotency-Key": "c-1"}
    paid = {"paymentReference": "reçu n° 7 — 東京"}
    confirmed = await client.post(path, json=paid, headers=key)
    replayed = await client.post(path, json=paid, headers=key)
    assert confirmed.status_code == replayed.status_code == 201, confirmed.text
    assert confirmed.json() == replayed.json()
    assert confirmed.json()["bookings"][0]["paymentReference"] == "reçu n° 7 — 東京"
    assert confirmed.json()["hold"]["customerId"] == "zoe-7"
    assert await counts(client, event) == [(3, 0, 2), (99, 0, 1)]

    created = await client.post("/events", json=EVENT, headers={"Idempotency-Key": "ev-1"})
    again = await client.post("/events", json=EVENT, headers={"Idempotency-Key": "ev-1"})
    assert created.status_code == again.status_code == 201
    assert created.json()["id"] == again.json()["id"]
    assert_problem(
        await client.post(
            "/events", json={**EVENT, "name": "Other"}, headers={"Idempotency-Key": "ev-1"}
        ),
        422,
        "idempotency_key_reused",
    )


async def test_a_customer_cap_over_http(client: httpx.AsyncClient) -> None:
    event = await create(client, {**EVENT, "maxPerCustomer": 3})
    assert event["maxPerCustomer"] == 3
    section = event["sections"][1]["id"]
    book = {"eventId": event["id"], "sectionId": section, "customerId": "fan"}
    assert (await client.post("/book", json={**book, "qty": 2})).status_code == 201
    problem = assert_problem(
        await client.post("/holds", json=hold_body(event, 0, 2, customerId="fan")),
        409,
        "customer_limit_exceeded",
    )
    assert (problem["limit"], problem["remainingForCustomer"], problem["requested"]) == (3, 1, 2)
    assert (await client.post("/book", json={**book, "qty": 1})).status_code == 201
    for cap in (0, -1, 10_001, "3"):
        assert_problem(
            await client.post("/events", json={**EVENT, "maxPerCustomer": cap}),
            400,
            "validation_error",
        )


async def test_the_audit_trail_over_http(client: httpx.AsyncClient) -> None:
    event = await create(client)
    section = event["sections"][0]["id"]
    book = {"eventId": event["id"], "sectionId": section, "qty": 4}
    headers = {"X-Request-ID": "req-abc"}
    booked = await client.post("/book", json=book, headers=headers)
    assert booked.headers["x-request-id"] == "req-abc"
    assert_problem(await client.post("/book", json=book), 400, "insufficient_seats")
    hold = (await client.post("/holds", json=hold_body(event, 1))).json()
    await client.delete(f"/holds/{hold['id']}")
    page = await client.get(f"/events/{event['id']}/audit", params={"limit": 2})
    records = page.json()
    assert [(r["action"], r["outcome"]) for r in records] == [("create", "ok"), ("create", "ok")]
    assert 'rel="next"' in page.headers["link"]
    rest: list[dict[str, Any]] = []
    while "link" in page.headers:
        page = await client.get(page.headers["link"].split(";")[0].strip("<>"))
        assert len(page.json()) <= 2
        rest += page.json()
    assert [(r["action"], r["outcome"], r["reason"], r["qty"]) for r in rest] == [
        ("book", "ok", None, 4),
        ("book", "refused", "insufficient_seats", 4),
        ("hold", "ok", None, 1),
        ("release", "ok", None, 1),
    ]
    assert rest[0]["requestId"] == "req-abc"
    assert [r["seq"] for r in records + rest] == sorted(r["seq"] for r in records + rest)
    assert_problem(await client.get(f"/events/{uuid.uuid4()}/audit"), 404, "not_found")
    assert_problem(
        await client.get(f"/events/{event['id']}/audit", params={"cursor": "garbage"}),
        400,
        "validation_error",
    )
