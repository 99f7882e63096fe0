"""Events endpoints, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import EVENT, assert_problem, create


@pytest.mark.parametrize("path", ["/events/create", "/events"])
async def test_create_event_returns_it_with_all_seats_free(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, json=EVENT)
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/events/{body['id']}"
    assert body["name"] == "Concert"
    assert body["createdAt"].endswith("Z") or "+00:00" in body["createdAt"]
    assert [(s["name"], s["price"], s["capacity"], s["remaining"]) for s in body["sections"]] == [
        ("VIP", 49.99, 5, 5),
        ("GA", 10, 100, 100),
    ]
    assert all(s["id"] for s in body["sections"])


async def test_names_are_trimmed(client: httpx.AsyncClient) -> None:
    body = await create(
        client, {"name": "  Gig ", "sections": [{"name": " A ", "price": "1.50", "capacity": 1}]}
    )
    assert body["name"] == "Gig"
    assert body["sections"][0]["name"] == "A"
    assert body["sections"][0]["price"] == 1.5


async def test_get_event(client: httpx.AsyncClient, event: dict[str, Any]) -> None:
    response = await client.get(f"/events/{event['id']}")
    assert response.status_code == 200
    assert response.json() == event


@pytest.mark.parametrize(
    "event_id", ["00000000-0000-0000-0000-000000000000", "abc", "1", "x" * 300]
)
async def test_unknown_or_malformed_event_is_404(client: httpx.AsyncClient, event_id: str) -> None:
    assert_problem(await client.get(f"/events/{event_id}"), 404, "not_found")


async def test_list_events_newest_first_with_link_pagination(client: httpx.AsyncClient) -> None:
    made = [await create(client, {**EVENT, "name": f"E{i}"}) for i in range(5)]
    first = await client.get("/events", params={"limit": 2})
    assert first.status_code == 200
    assert [e["name"] for e in first.json()] == ["E4", "E3"]
    seen = [e["id"] for e in first.json()]
    next_url = first.links["next"]["url"]
    while next_url:
        page = await client.get(next_url)
        assert page.status_code == 200
        seen += [e["id"] for e in page.json()]
        next_url = page.links.get("next", {}).get("url")
    assert seen == [e["id"] for e in reversed(made)]
    everything = await client.get("/events")
    assert "link" not in everything.headers
    assert len(everything.json()) == 5


async def test_list_events_when_empty(client: httpx.AsyncClient) -> None:
    response = await client.get("/events")
    assert response.status_code == 200
    assert response.json() == []


def section(**overrides: Any) -> dict[str, Any]:
    return {"name": "GA", "price": 10, "capacity": 10, **overrides}


BAD_EVENTS: list[tuple[str, Any]] = [
    ("empty object", {}),
    ("array", [EVENT]),
    ("string", "Concert"),
    ("null", None),
    ("missing sections", {"name": "x"}),
    ("missing name", {"sections": [section()]}),
    ("no sections", {"name": "x", "sections": []}),
    ("101 sections", {"name": "x", "sections": [section(name=f"s{i}") for i in range(101)]}),
    ("empty name", {"name": "", "sections": [section()]}),
    ("blank name", {"name": "   ", "sections": [section()]}),
    ("name too long", {"name": "x" * 201, "sections": [section()]}),
    ("name not a string", {"name": 5, "sections": [section()]}),
    ("NUL in the name", {"name": "Con\u0000cert", "sections": [section()]}),
    ("newline in a section name", {"name": "x", "sections": [section(name="G\nA")]}),
    ("section name empty", {"name": "x", "sections": [section(name="")]}),
    ("section name too long", {"name": "x", "sections": [section(name="s" * 201)]}),
    ("duplicate sections", {"name": "x", "sections": [section(), section()]}),
    ("duplicate sections by case", {"name": "x", "sections": [section(), section(name="ga")]}),
    ("negative price", {"name": "x", "sections": [section(price=-1)]}),
    ("three decimals", {"name": "x", "sections": [section(price=9.999)]}),
    ("price too high", {"name": "x", "sections": [section(price=1_000_000.01)]}),
    ("price bool", {"name": "x", "sections": [section(price=True)]}),
    ("price null", {"name": "x", "sections": [section(price=None)]}),
    ("price nan string", {"name": "x", "sections": [section(price="NaN")]}),
    ("capacity zero", {"name": "x", "sections": [section(capacity=0)]}),
    ("capacity too high", {"name": "x", "sections": [section(capacity=1_000_001)]}),
    ("capacity string", {"name": "x", "sections": [section(capacity="10")]}),
    ("capacity float", {"name": "x", "sections": [section(capacity=1.5)]}),
    ("unknown field", {**EVENT, "remaining": 0}),
    ("unknown section field", {"name": "x", "sections": [section(remaining=0)]}),
]


@pytest.mark.parametrize(("case", "body"), BAD_EVENTS, ids=[c for c, _ in BAD_EVENTS])
async def test_invalid_events_are_400_and_create_nothing(
    client: httpx.AsyncClient, case: str, body: Any
) -> None:
    problem = assert_problem(await client.post("/events", json=body), 400, "validation_error")
    assert problem["errors"], case
    assert (await client.get("/events")).json() == []


async def test_limits_at_the_edge_are_accepted(client: httpx.AsyncClient) -> None:
    body = {
        "name": "x" * 200,
        "sections": [
            {"name": f"{i:03d}" + "s" * 197, "price": 1_000_000, "capacity": 1_000_000}
            for i in range(100)
        ],
    }
    created = await create(client, body)
    assert len(created["sections"]) == 100
    assert created["sections"][0]["price"] == 1_000_000
