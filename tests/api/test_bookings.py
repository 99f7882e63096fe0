"""Booking endpoints, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.api.conftest import assert_problem, create

pytestmark = pytest.mark.parametrize("booking_strategy", ["direct", "batched"])


def book_body(event: dict[str, Any], qty: int = 1, index: int = 0) -> dict[str, Any]:
    return {"eventId": event["id"], "sectionId": event["sections"][index]["id"], "qty": qty}


async def remaining(client: httpx.AsyncClient, event: dict[str, Any], index: int = 0) -> int:
    value: int = (await client.get(f"/events/{event['id']}")).json()["sections"][index]["remaining"]
    return value


async def test_book_returns_the_booking(client: httpx.AsyncClient, event: dict[str, Any]) -> None:
    response = await client.post("/book", json=book_body(event, 3))
    assert response.status_code == 201
    booking = response.json()
    assert response.headers["location"] == f"/bookings/{booking['id']}"
    assert booking["eventId"] == event["id"]
    assert booking["sectionId"] == event["sections"][0]["id"]
    assert (booking["qty"], booking["unitPrice"], booking["totalPrice"]) == (3, 49.99, 149.97)
    assert booking["status"] == "confirmed"
    assert booking["createdAt"]
    assert await remaining(client, event) == 2
    fetched = await client.get(f"/bookings/{booking['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == booking


async def test_sold_out_is_400_with_seats_left(
    client: httpx.AsyncClient, event: dict[str, Any]
) -> None:
    assert (await client.post("/book", json=book_body(event, 4))).status_code == 201
    problem = assert_problem(
        await client.post("/book", json=book_body(event, 2)), 400, "insufficient_seats"
    )
    assert problem["remaining"] == 1
    assert problem["requested"] == 2
    assert await remaining(client, event) == 1


async def test_unknown_event_or_foreign_section_is_404(
    client: httpx.AsyncClient, event: dict[str, Any]
) -> None:
    other = await create(client)
    cases = [
        {**book_body(event), "eventId": str(uuid.uuid4())},
        {**book_body(event), "eventId": "not-an-id"},
        {**book_body(event), "sectionId": other["sections"][0]["id"]},
        {**book_body(event), "sectionId": str(uuid.uuid4())},
    ]
    for body in cases:
        assert_problem(await client.post("/book", json=body), 404, "not_found")
    assert await remaining(client, event) == 5
    assert await remaining(client, other) == 5


BAD_QTY: list[Any] = ["2", 1.5, 2.0, True, None, 0, -1, 11, 1001, [1], {"n": 1}]


@pytest.mark.parametrize("qty", BAD_QTY, ids=[repr(q) for q in BAD_QTY])
async def test_bad_quantities_are_400_and_change_nothing(
    client: httpx.AsyncClient, event: dict[str, Any], qty: Any
) -> None:
    problem = assert_problem(
        await client.post("/book", json={**book_body(event), "qty": qty}), 400, "validation_error"
    )
    assert problem["errors"][0]["field"] == "qty"
    assert await remaining(client, event) == 5
    assert (await client.get("/bookings")).json() == []


BAD_BOOKINGS: list[tuple[str, Any]] = [
    ("missing qty", lambda e: {"eventId": e["id"], "sectionId": e["sections"][0]["id"]}),
    ("missing sectionId", lambda e: {"eventId": e["id"], "qty": 1}),
    ("eventId number", lambda e: {**book_body(e), "eventId": 5}),
    ("eventId empty", lambda e: {**book_body(e), "eventId": ""}),
    ("injected remaining", lambda e: {**book_body(e), "remaining": 1000}),
    ("injected price", lambda e: {**book_body(e), "price": 0}),
    ("snake_case", lambda e: {"event_id": e["id"], "section_id": e["sections"][0]["id"], "qty": 1}),
    ("array", lambda e: [book_body(e)]),
    ("null", lambda e: None),
]


@pytest.mark.parametrize(("case", "make"), BAD_BOOKINGS, ids=[c for c, _ in BAD_BOOKINGS])
async def test_malformed_bookings_are_400(
    client: httpx.AsyncClient, event: dict[str, Any], case: str, make: Any
) -> None:
    assert_problem(await client.post("/book", json=make(event)), 400, "validation_error")
    assert await remaining(client, event) == 5


RAW_BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("malformed json", b'{"eventId": ', {"content-type": "application/json"}),
    ("not utf-8", b'{"eventId": "\xff\xfe"}', {"content-type": "application/json"}),
    ("utf-16 garbage", b"\xff\xfe\x00\x00", {"content-type": "application/json"}),
    ("empty body", b"", {"content-type": "application/json"}),
    ("no content type", b'{"qty": 1}', {}),
    ("text/plain", b'{"qty": 1}', {"content-type": "text/plain"}),
]


@pytest.mark.parametrize(("case", "raw", "headers"), RAW_BODIES, ids=[c for c, *_ in RAW_BODIES])
async def test_unparseable_bodies_are_400(
    client: httpx.AsyncClient, case: str, raw: bytes, headers: dict[str, str]
) -> None:
    for path in ("/book", "/events/create"):
        assert_problem(
            await client.post(path, content=raw, headers=headers), 400, "validation_error"
        )


async def test_bodies_over_the_limit_are_413(client: httpx.AsyncClient) -> None:
    big = b'{"name": "' + b"x" * 70_000 + b'", "sections": []}'
    headers = {"content-type": "application/json"}
    assert_problem(
        await client.post("/events", content=big, headers=headers), 413, "payload_too_large"
    )

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    # No Content-Length: the body is counted as it streams in.
    assert_problem(
        await client.post("/events", content=chunks(), headers=headers), 413, "payload_too_large"
    )
    assert (await client.get("/events")).json() == []


async def test_list_bookings_newest_first_filtered_and_paginated(
    client: httpx.AsyncClient, event: dict[str, Any]
) -> None:
    other = await create(client)
    made = []
    for _i in range(5):
        made.append((await client.post("/book", json=book_body(event, 1, index=1))).json())
        await client.post("/book", json=book_body(other, 1, index=1))
    everything = await client.get("/bookings")
    assert len(everything.json()) == 10
    mine = await client.get("/bookings", params={"eventId": event["id"], "limit": 2})
    assert mine.status_code == 200
    ids = [b["id"] for b in mine.json()]
    next_url = mine.links["next"]["url"]
    assert f"eventId={event['id']}" in next_url
    while next_url:
        page = await client.get(next_url)
        ids += [b["id"] for b in page.json()]
        next_url = page.links.get("next", {}).get("url")
    assert ids == [b["id"] for b in reversed(made)]


async def test_filter_by_unknown_event_is_empty(client: httpx.AsyncClient) -> None:
    for event_id in (str(uuid.uuid4()), "garbage"):
        response = await client.get("/bookings", params={"eventId": event_id})
        assert response.status_code == 200
        assert response.json() == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"limit": -5},
        {"cursor": "garbage"},
        {"cursor": "x" * 201},
        {"cursor": ""},
    ],
)
@pytest.mark.parametrize("path", ["/bookings", "/events"])
async def test_bad_page_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, Any], path: str
) -> None:
    assert_problem(await client.get(path, params=params), 400, "validation_error")


@pytest.mark.parametrize("booking_id", [str(uuid.uuid4()), "nope"])
async def test_unknown_booking_is_404(client: httpx.AsyncClient, booking_id: str) -> None:
    assert_problem(await client.get(f"/bookings/{booking_id}"), 404, "not_found")
