"""`FastRoutes` answers book, hold and confirm below FastAPI exactly as their routes do.

Two apps with the same settings and clocks, each on its own fresh database,
are sent the same checkout, request for request: one as served, one with
`FastRoutes` taken out (every request through FastAPI's routing and
validation). Every answer, refusals and replays included, must be the same:
status, headers and body byte for byte, ids aside (each database makes its
own). The join's own comparison is in test_waiting_room.py.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from boxoffice.api.app import create_app
from boxoffice.api.fast_routes import FastRoute, FastRoutes
from boxoffice.api.routes.bookings import FAST_BOOK
from boxoffice.api.routes.holds import FAST_CONFIRM, FAST_HOLD
from boxoffice.api.schemas import BookIn
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.domain.errors import NotFound
from boxoffice.services.clock import FakeClock
from tests.conftest import fresh_database_url
from tests.support.fast_paths import through_fast_path
from tests.support.keys import bearer

UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def without_ids(raw: bytes) -> bytes:
    return UUID.sub(b"<id>", raw)


class Shop:
    """One app, its database, its clock and the keys of who calls it."""

    def __init__(self, app: FastAPI, database: Database, clock: FakeClock) -> None:
        self.app = app
        self.database = database
        self.clock = clock
        self.http: httpx.AsyncClient
        self.keys: dict[str, dict[str, str]] = {}
        self.ids: dict[str, str] = {}  # what a step's answer named, for later steps

    async def call(
        self, method: str, path: str, body: bytes | None, who: str, **headers: str
    ) -> httpx.Response:
        """`path`'s `{name}`s and the body's `$name`s are this shop's ids of those names."""
        for name, ident in self.ids.items():
            body = None if body is None else body.replace(f"${name}".encode(), ident.encode())
        sent = {**self.keys[who], **headers}
        return await self.http.request(method, path.format(**self.ids), content=body, headers=sent)


@asynccontextmanager
async def shop(settings: Settings, url: str, fast: bool) -> AsyncIterator[Shop]:
    database = Database.from_settings(settings.model_copy(update={"database_url": url}))
    clock = FakeClock()
    app = create_app(settings.model_copy(update={"database_url": url}), database, clock=clock)
    if not fast:
        app.user_middleware = [
            layer for layer in app.user_middleware if layer.cls is not FastRoutes
        ]
    found = Shop(app, database, clock)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                found.http = http
                found.keys = {
                    "admin": await bearer(database),
                    "alice": await bearer(database, "customer", customer_id="alice"),
                    "bob": await bearer(database, "customer", customer_id="bob"),
                    "organizer": await bearer(database, "organizer", organizer_id="o1"),
                }
                made = await found.call(
                    "POST",
                    "/events",
                    json.dumps(
                        {
                            "name": "Hot",
                            "maxPerCustomer": 4,
                            "organizerId": "o1",
                            "sections": [
                                {"name": "A", "price": 12.5, "capacity": 3},
                                {"name": "B", "price": 40, "capacity": 20},
                            ],
                        }
                    ).encode(),
                    "admin",
                    **{"Content-Type": "application/json"},
                )
                assert made.status_code == 201, made.text
                event = made.json()
                found.ids = {
                    "event": event["id"],
                    "a": event["sections"][0]["id"],
                    "b": event["sections"][1]["id"],
                }
                yield found
    finally:
        await database.dispose()


JSON = {"Content-Type": "application/json"}


def book(section: str, qty: Any, **more: Any) -> bytes:
    return json.dumps(
        {"eventId": "$event", "sectionId": f"${section}", "qty": qty, **more}
    ).encode()


def hold(*items: tuple[str, Any], **more: Any) -> bytes:
    body = {
        "eventId": "$event",
        "items": [{"sectionId": f"${section}", "qty": qty} for section, qty in items],
        **more,
    }
    return json.dumps(body).encode()


SHORT_HOLD = hold(("b", 1), ttlSeconds=30)
HOLD_KEY = {**JSON, "Idempotency-Key": "h"}

# (method, path, body, who, headers, status, name to remember the answer's id by)
Step = tuple[str, str, bytes | None, str, dict[str, str], int, str | None]
STEPS: list[Step] = [
    ("POST", "/book", book("a", 2), "alice", JSON, 201, None),
    ("POST", "/book", book("a", 2), "alice", JSON, 400, None),  # 1 left
    ("POST", "/book", book("a", 1), "alice", {**JSON, "Idempotency-Key": "k1"}, 201, None),
    ("POST", "/book", book("a", 1), "alice", {**JSON, "Idempotency-Key": "k1"}, 201, None),
    ("POST", "/book", book("a", 2), "alice", {**JSON, "Idempotency-Key": "k1"}, 422, None),
    ("POST", "/book", book("b", 1), "alice", {**JSON, "Idempotency-Key": "k2"}, 201, None),
    ("POST", "/book", book("a", 1), "alice", {**JSON, "Idempotency-Key": "bad\x01"}, 400, None),
    ("POST", "/book", book("b", 9), "alice", JSON, 409, None),  # over maxPerCustomer
    ("POST", "/book", book("b", 1, customerId="bob"), "alice", JSON, 403, None),
    ("POST", "/book", book("b", 1), "organizer", JSON, 201, None),  # a box office's sale
    ("POST", "/book", book("b", 1, customerId="carol"), "organizer", JSON, 201, None),
    ("POST", "/book", book("b", 0), "bob", JSON, 400, None),
    ("POST", "/book", book("b", "1"), "bob", JSON, 400, None),
    ("POST", "/book", book("b", 1, extra=True), "bob", JSON, 400, None),
    ("POST", "/book", b"{not json", "bob", JSON, 400, None),
    ("POST", "/book", b"", "bob", JSON, 400, None),
    ("POST", "/book", book("b", 1), "bob", {"Content-Type": "text/plain"}, 400, None),
    (
        "POST",
        "/book",
        book("b", 1),
        "bob",
        {"Content-Type": "application/json; charset=utf-8"},
        201,
        None,
    ),
    ("POST", "/book", book("nope", 1), "bob", JSON, 404, None),
    ("POST", "/hold", hold(("b", 1)), "bob", JSON, 404, None),  # no such route
    ("POST", "/holds", hold(("b", 1), ("a", 0)), "bob", JSON, 400, None),
    ("POST", "/holds", hold(("b", 1), ttlSeconds=5), "bob", JSON, 400, None),
    ("POST", "/holds", hold(("b", 1), ("b", 1)), "bob", JSON, 400, None),  # once each
    ("POST", "/holds", hold(("b", 2)), "bob", JSON, 201, "h1"),
    ("POST", "/holds", SHORT_HOLD, "bob", HOLD_KEY, 201, "h2"),
    ("POST", "/holds", SHORT_HOLD, "bob", HOLD_KEY, 201, None),
    ("POST", "/holds", hold(("b", 1)), "bob", JSON, 409, None),  # two active holds at most
    ("POST", "/holds", hold(("b", 5)), "alice", JSON, 409, None),  # over maxPerCustomer
    ("POST", "/holds", hold(("b", 1)), "organizer", JSON, 201, None),
    ("POST", "/holds/{h1}/confirm", None, "alice", {}, 404, None),  # bob's
    ("POST", "/holds/{h1}/confirm", b'{"paymentReference": 5}', "bob", JSON, 400, None),
    ("POST", "/holds/{h1}/confirm", b'{"paymentReference": "pi_1"}', "bob", JSON, 201, None),
    ("POST", "/holds/{h1}/confirm", b"{}", "bob", JSON, 409, None),  # hold_not_active
    ("POST", "/holds/{h1}/confirm", b"", "bob", {"Idempotency-Key": "c1"}, 409, None),
    ("POST", "/holds/nope/confirm", b"{}", "bob", JSON, 404, None),
    ("POST", "/holds/{h2}/confirm", b"pi_2", "bob", {"Content-Type": "text/plain"}, 400, None),
    ("ADVANCE", "31", None, "", {}, 0, None),
    ("POST", "/holds/{h2}/confirm", None, "bob", {}, 409, None),  # hold_expired
    ("POST", "/holds", SHORT_HOLD, "bob", HOLD_KEY, 201, None),
    ("POST", "/holds", hold(("b", 1)), "bob", JSON, 201, "h3"),
    ("POST", "/holds/{h3}/confirm", None, "organizer", {}, 201, None),  # the event's organizer
]


@pytest.fixture
def checkout_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "max_active_holds_per_customer": 2,
            "max_hold_churn_per_hour": 10,
            "rate_limits_enabled": False,
        }
    )


async def test_book_hold_and_confirm_are_answered_below_fastapi_exactly_as_their_routes_answer(
    checkout_settings: Settings, database_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every answer of a checkout, refusals, replays and bodies the fast path leaves to
    the route included, is the same with `FastRoutes` as without it, ids aside."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    other_url = fresh_database_url(request, kind, tmp_path / "routed.db")
    async with (
        shop(checkout_settings, database_url, fast=True) as fast,
        shop(checkout_settings, other_url, fast=False) as routed,
    ):
        assert any(layer.cls is FastRoutes for layer in fast.app.user_middleware)
        for method, path, body, who, headers, status, name in STEPS:
            if method == "ADVANCE":
                fast.clock.advance(float(path))
                routed.clock.advance(float(path))
                continue
            answers = []
            for one in (fast, routed):
                answers.append(await one.call(method, path, body, who, **headers))
                if name is not None and answers[-1].status_code == 201:
                    one.ids[name] = answers[-1].json()["id"]
            quick, slow = answers
            step = (method, path, body, who)
            assert quick.status_code == slow.status_code == status, (step, quick.text)
            assert without_ids(quick.content) == without_ids(slow.content), step
            assert [
                (name, without_ids(value.encode()))
                for name, value in quick.headers.multi_items()
                if name != "x-request-id"
            ] == [
                (name, without_ids(value.encode()))
                for name, value in slow.headers.multi_items()
                if name != "x-request-id"
            ], step  # the same headers, in the same order


@pytest.mark.parametrize(
    ("fast", "path", "body"),
    [
        (FAST_BOOK, "/book", book("b", 1)),
        (FAST_HOLD, "/holds", hold(("b", 1))),
        (FAST_CONFIRM, "/holds/{h}/confirm", b"{}"),
    ],
    ids=["book", "hold", "confirm"],
)
async def test_a_purchase_never_reaches_fastapi_and_is_counted_under_its_route(
    checkout_settings: Settings,
    database_url: str,
    fast: FastRoute[Any, Any],
    path: str,
    body: bytes,
) -> None:
    """In front of an app that must not be reached, the fast path answers a valid purchase
    itself, and names the route's template for the metrics; what it cannot read goes on."""
    async with shop(checkout_settings, database_url, fast=True) as served:
        placed = await served.call("POST", "/holds", hold(("b", 1)), "bob", **JSON)
        served.ids["h"] = placed.json()["id"]
        token = served.keys["bob"]["Authorization"].removeprefix("Bearer ")
        principal = await served.app.state.keys.principal(token, served.clock())
        for name, ident in served.ids.items():
            body = body.replace(f"${name}".encode(), ident.encode())
        target = path.format(**served.ids)
        answered = await through_fast_path(
            served.app, fast, target, body, b"application/json", principal
        )
        assert answered.sent[0]["status"] == 201, answered.sent
        assert json.loads(answered.sent[1]["body"])["id" if fast is not FAST_CONFIRM else "hold"]
        assert answered.scope["route"] is fast.route
        assert answered.scope["route"].path == re.sub(r"\{\w+\}", "{hold_id}", path)
        assert answered.reached == []
        form = await through_fast_path(
            served.app, fast, target, b"qty=1", b"application/x-www-form-urlencoded", principal
        )
        assert form.sent == []
        assert form.reached == [b"qty=1"]


async def refused_below_fastapi(app: FastAPI, refusal: Exception) -> list[dict[str, Any]]:
    """What a fast route whose work raises `refusal` sends, in front of `app`."""

    async def refuse(request: Any, body: Any, params: tuple[str, ...]) -> Any:
        raise refusal

    fast = FastRoute(FAST_BOOK.router, "book", re.compile("/refused"), BookIn, False, refuse)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/refused", "headers": [], "app": app}
    scope["boxoffice.request_id"] = "r1"
    await FastRoutes(app, [fast])(scope, receive, send)
    return sent


async def test_a_refusal_answered_by_the_fast_path_lets_go_of_the_request(
    settings: Settings,
) -> None:
    """As Starlette does for a route: a refusal (one error object may be handed to a
    whole batch's waiters) keeps no traceback, so no request's frames, once answered."""
    refusal = NotFound("No such thing.")
    sent = await refused_below_fastapi(create_app(settings), refusal)
    assert sent[0]["status"] == 404
    assert refusal.__traceback__ is None


async def test_a_sync_exception_handler_answers_a_fast_refusal_as_starlette_would(
    settings: Settings,
) -> None:
    """Starlette takes plain functions as exception handlers; so must the fast path, or a
    handler registered that way would turn every refusal it handles into a 500."""
    app = create_app(settings)
    ran_on: list[int] = []

    def teapot(request: Any, error: Exception) -> Any:
        ran_on.append(threading.get_ident())
        return PlainTextResponse("short and stout", status_code=418)

    app.add_exception_handler(NotFound, teapot)
    refusal = NotFound("No such thing.")
    sent = await refused_below_fastapi(app, refusal)
    assert sent[0]["status"] == 418
    assert sent[1]["body"] == b"short and stout"
    assert ran_on != [threading.get_ident()], "a plain function runs off the event loop"
    assert refusal.__traceback__ is None
