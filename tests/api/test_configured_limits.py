"""Limits are settings: the app enforces, and publishes, the values it was given."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from tests.api.conftest import assert_problem, create
from tests.support.keys import bearer


@pytest.fixture
async def tight(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    tight_settings = settings.model_copy(
        update={
            "max_tickets_per_booking": 4,
            "max_body_bytes": 2048,
            "default_page_size": 2,
            "max_page_size": 3,
        }
    )
    app = create_app(tight_settings, database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = await bearer(database)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            yield http


async def test_configured_limits_apply(tight: httpx.AsyncClient) -> None:
    event = await create(tight)
    body = {"eventId": event["id"], "sectionId": event["sections"][1]["id"]}
    assert (await tight.post("/book", json={**body, "qty": 4})).status_code == 201
    assert_problem(await tight.post("/book", json={**body, "qty": 5}), 400, "validation_error")

    schema = (await tight.get("/openapi.json")).json()
    assert schema["components"]["schemas"]["BookIn"]["properties"]["qty"]["maximum"] == 4

    big = {"name": "x" * 3000, "sections": []}
    assert_problem(await tight.post("/events", json=big), 413, "payload_too_large")

    for _ in range(3):
        await create(tight)
    page = await tight.get("/events")
    assert len(page.json()) == 2
    assert "next" in page.links
    assert len((await tight.get("/events", params={"limit": 3})).json()) == 3
    assert_problem(await tight.get("/events", params={"limit": 4}), 400, "validation_error")
    for bad in ("0", "-1", "10000000000000000000000", "two"):
        assert_problem(await tight.get("/events", params={"limit": bad}), 400, "validation_error")
    limits = [
        parameter["schema"]
        for item in schema["paths"].values()
        for operation in item.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "limit"
    ]
    assert len(limits) >= 5  # every list
    assert all(limit["maximum"] == 3 and limit["default"] == 2 for limit in limits), limits


async def test_started_app_tunes_the_garbage_collector(
    settings: Settings, database: Database
) -> None:
    """Start-up freezes what lives as long as the process and widens the young
    generation (see GC_THRESHOLDS); both were measured under load, so keep them."""
    import gc

    from boxoffice.api.app import GC_THRESHOLDS

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        app = create_app(settings, database)
        async with app.router.lifespan_context(app):
            assert gc.get_threshold() == GC_THRESHOLDS
            assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
