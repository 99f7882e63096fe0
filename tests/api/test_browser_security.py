"""CORS: off by default, an allow-list when set. (The security headers are the server's:
tests/e2e/test_server_edge.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from tests.support.keys import bearer

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
SHOP = "https://shop.example.com"


@pytest.fixture
def serve(settings: Settings, database: Database) -> Serve:
    @asynccontextmanager
    async def started(**changes: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings.model_copy(update=changes), database)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield http

    return started


async def test_cors_is_off_by_default(serve: Serve) -> None:
    async with serve() as http:
        simple = await http.get("/events", headers={"Origin": SHOP})
        assert "access-control-allow-origin" not in simple.headers
        preflight = await http.options(
            "/book",
            headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers


async def test_cors_lets_listed_origins_in_and_no_other(serve: Serve, database: Database) -> None:
    customer = await bearer(database, "customer", customer_id="c1")
    async with serve(cors_allow_origins=f"{SHOP}, https://m.example.com") as http:
        preflight = await http.options(
            "/book",
            headers={
                "Origin": SHOP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, "
                "admission-token",
            },
        )
        assert preflight.status_code == 200  # no key needed for a preflight
        assert preflight.headers["access-control-allow-origin"] == SHOP
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in preflight.headers
        read = await http.get("/bookings", headers={"Origin": SHOP, **customer})
        assert read.headers["access-control-allow-origin"] == SHOP
        exposed = read.headers["access-control-expose-headers"].lower()
        assert {"location", "link", "retry-after", "ratelimit"} <= set(exposed.split(", "))
        stranger = await http.options(
            "/book",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert stranger.status_code == 400
        assert "access-control-allow-origin" not in stranger.headers


@pytest.mark.parametrize(
    "origins", ["shop.example.com", "https://shop.example.com/", "https://a.com/path", "ftp://x"]
)
def test_an_origin_that_is_not_one_is_refused_at_start(origins: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        Settings(cors_allow_origins=origins, _env_file=None)  # type: ignore[call-arg]
