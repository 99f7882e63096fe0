from __future__ import annotations

from typing import Any

import httpx
import pytest

EVENT = {
    "name": "Concert",
    "sections": [
        {"name": "VIP", "price": 49.99, "capacity": 5},
        {"name": "GA", "price": 10, "capacity": 100},
    ],
}


async def create(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await client.post("/events/create", json=body or EVENT)
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


@pytest.fixture
def sqlite_writer() -> str:
    """SQLite's writer on a thread: these tests are about HTTP, and a writer process costs
    each of them over a second to start (its interpreter and imports). Its pickling, kills
    and restarts are tested in tests/integration (test_sqlite_writer.py, test_group_commit.py,
    test_checkout_states.py) and by every server tests/e2e starts."""
    return "thread"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


@pytest.fixture
async def event(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create(client)
