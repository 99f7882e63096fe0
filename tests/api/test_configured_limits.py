"""Limits are settings: the app enforces, and publishes, the values it was given."""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator
from pathlib import Path

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


# Python's own thresholds, which start-up must replace.
PYTHON_DEFAULT_THRESHOLDS = (700, 10, 10)
PERFORMANCE_DOC = Path(__file__).parents[2] / "docs" / "performance.md"


def measured_thresholds() -> tuple[int, ...]:
    """The thresholds docs/performance.md measured and publishes."""
    found = re.search(r"gc\.set_threshold\(([\d_]+), (\d+), (\d+)\)", PERFORMANCE_DOC.read_text())
    assert found is not None, "docs/performance.md no longer says which thresholds it measured"
    return tuple(int(number) for number in found.groups())


async def test_started_app_tunes_the_garbage_collector(
    settings: Settings, database: Database
) -> None:
    """Start-up freezes what lives as long as the process, the app included, and sets
    the thresholds docs/performance.md measured under load.

    Whatever earlier tests left behind is undone first (their apps froze objects and
    set thresholds too), so only this start-up can make the checks pass.
    """
    before = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(*PYTHON_DEFAULT_THRESHOLDS)
    try:
        app = create_app(settings, database)
        assert gc.get_freeze_count() == 0
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 0, "start-up froze nothing"
            # The frozen generation is not among those gc.get_objects() lists.
            assert not any(o is app for o in gc.get_objects()), "the app was not frozen"
            assert gc.get_threshold() != PYTHON_DEFAULT_THRESHOLDS, "thresholds left as they were"
            assert gc.get_threshold() == measured_thresholds()
    finally:
        gc.set_threshold(*before)
