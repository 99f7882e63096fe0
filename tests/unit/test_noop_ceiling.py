"""The benchmark's ceiling must be fair: routed like `/book`, answering like `/book`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from bench.noop_app import create_noop_app, router
from fastapi.routing import _IncludedRouter

from boxoffice.api.routes import bookings


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    monkeypatch.setenv("BOXOFFICE_OPEN_ACCESS", "true")  # as the benchmark runs it (for now)


@pytest.mark.usefixtures("app_env")
def test_noop_is_routed_just_before_the_bookings_router() -> None:
    routers = [
        route.original_router
        for route in create_noop_app().router.routes
        if isinstance(route, _IncludedRouter)
    ]
    assert routers.index(router) + 1 == routers.index(bookings.router)


@pytest.mark.usefixtures("app_env")
async def test_noop_answers_a_booking_and_validates_like_book() -> None:
    transport = httpx.ASGITransport(app=create_noop_app())  # no lifespan: no database
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        body = {"eventId": "e", "sectionId": "s", "qty": 2}
        answered = await client.post("/noop", json=body)
        assert answered.status_code == 201
        assert answered.json()["totalPrice"] == 10
        refused = await client.post("/noop", json={**body, "price": 0})
        assert refused.status_code == 400
        assert refused.headers["content-type"] == "application/problem+json"
