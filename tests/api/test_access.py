"""Who may do what, over HTTP: every endpoint × every caller × own or someone else's object.

The expected statuses are written out by hand in `EXPECTED`, one row per endpoint, not
derived from the code's rules: the table is the specification (the issue's roles), and
the test checks the service against it on both databases. The code's own table,
`PERMISSIONS`, must name every operation and agree with it: what it lets each role do
is what the hand-written rows expect (`test_the_permission_table_agrees`).

Callers: the public (no key), customers A and B, organizers X and Y, an admin. Objects:
an event of organizer X with a hold and a booking of customer A in it. "Own" is from
customer A's and organizer X's side; B and Y are the strangers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.domain.access import PERMISSIONS, Role
from boxoffice.services.keys import KEY_PREFIX
from tests.support.keys import bearer

ROOM = {"newUsersPerMinute": 10, "totalActiveUsers": 10}
CALLERS = ("public", "customer_a", "customer_b", "organizer_x", "organizer_y", "admin")


@dataclass
class World:
    http: httpx.AsyncClient
    headers: dict[str, dict[str, str]]
    event: dict[str, Any]
    hold_id: str
    booking_id: str
    keys: dict[str, str]  # caller -> key id

    def as_(self, who: str) -> dict[str, str]:
        return self.headers.get(who, {})


@pytest.fixture
async def world(settings: Settings, database: Database) -> AsyncIterator[World]:
    app = create_app(settings, database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            headers = {
                "customer_a": await bearer(database, "customer", customer_id="alice"),
                "customer_b": await bearer(database, "customer", customer_id="bob"),
                "organizer_x": await bearer(database, "organizer"),
                "organizer_y": await bearer(database, "organizer"),
                "admin": await bearer(database, "admin"),
            }
            keys = {
                who: header["Authorization"].removeprefix(f"Bearer {KEY_PREFIX}")[:16]
                for who, header in headers.items()
            }
            event = (
                await http.post(
                    "/events",
                    json={
                        "name": "X live",
                        "sections": [{"name": "GA", "price": 5, "capacity": 50}],
                    },
                    headers=headers["organizer_x"],
                )
            ).json()
            section = event["sections"][0]["id"]
            hold = await http.post(
                "/holds",
                json={"eventId": event["id"], "items": [{"sectionId": section, "qty": 1}]},
                headers=headers["customer_a"],
            )
            assert hold.status_code == 201, hold.text
            booking = await http.post(
                "/book",
                json={"eventId": event["id"], "sectionId": section, "qty": 1},
                headers=headers["customer_a"],
            )
            assert booking.status_code == 201, booking.text
            room = await http.put(
                f"/events/{event['id']}/waiting-room",
                json={**ROOM, "enabled": False},  # stored, and gates nothing
                headers=headers["organizer_x"],
            )
            assert room.status_code == 200, room.text
            yield World(http, headers, event, hold.json()["id"], booking.json()["id"], keys)


def _event_body() -> dict[str, Any]:
    return {"name": "New", "sections": [{"name": "GA", "price": 5, "capacity": 5}]}


Request = Callable[[World], tuple[str, str, dict[str, Any] | None]]

# endpoint: (request, expected status per caller, in the order of CALLERS)
EXPECTED: dict[str, tuple[Request, tuple[int, ...]]] = {
    "list events": (lambda w: ("GET", "/events", None), (200, 200, 200, 200, 200, 200)),
    "get event": (lambda w: ("GET", f"/events/{w.event['id']}", None), (200,) * 6),
    "create event": (
        lambda w: ("POST", "/events", _event_body()),
        (401, 403, 403, 201, 201, 201),
    ),
    "create event (original path)": (
        lambda w: ("POST", "/events/create", _event_body()),
        (401, 403, 403, 201, 201, 201),
    ),
    "event audit trail": (
        lambda w: ("GET", f"/events/{w.event['id']}/audit", None),
        (401, 403, 403, 200, 404, 200),
    ),
    "book": (
        lambda w: (
            "POST",
            "/book",
            {"eventId": w.event["id"], "sectionId": w.event["sections"][0]["id"], "qty": 1},
        ),
        (401, 201, 201, 201, 404, 201),
    ),
    "hold": (
        lambda w: (
            "POST",
            "/holds",
            {
                "eventId": w.event["id"],
                "items": [{"sectionId": w.event["sections"][0]["id"], "qty": 1}],
            },
        ),
        (401, 201, 201, 201, 404, 201),
    ),
    "list bookings": (lambda w: ("GET", "/bookings", None), (401, 200, 200, 200, 200, 200)),
    "get booking": (
        lambda w: ("GET", f"/bookings/{w.booking_id}", None),
        (401, 200, 404, 200, 404, 200),
    ),
    "get hold": (
        lambda w: ("GET", f"/holds/{w.hold_id}", None),
        (401, 200, 404, 200, 404, 200),
    ),
    "list keys": (lambda w: ("GET", "/keys", None), (401, 403, 403, 403, 403, 200)),
    "make a key": (
        lambda w: ("POST", "/keys", {"role": "customer", "customerId": "carol"}),
        (401, 403, 403, 403, 403, 201),
    ),
    "healthz": (lambda w: ("GET", "/healthz", None), (200,) * 6),
    "readyz": (lambda w: ("GET", "/readyz", None), (200,) * 6),
    "metrics": (lambda w: ("GET", "/metrics", None), (401, 403, 403, 403, 403, 200)),
    "event flags": (
        lambda w: ("GET", f"/events/{w.event['id']}/flags", None),
        (401, 403, 403, 200, 404, 200),
    ),
    "all flags": (lambda w: ("GET", "/flags", None), (401, 403, 403, 403, 403, 200)),
    "set up the waiting room": (
        lambda w: ("PUT", f"/events/{w.event['id']}/waiting-room", {**ROOM, "enabled": False}),
        (401, 403, 403, 200, 404, 200),
    ),
    "read the waiting room": (
        lambda w: ("GET", f"/events/{w.event['id']}/waiting-room", None),
        (401, 403, 403, 200, 404, 200),
    ),
    # The room is off: customers may join no line (409); staff queue for nobody.
    "join the line": (
        lambda w: ("POST", f"/events/{w.event['id']}/queue", None),
        (401, 409, 409, 403, 403, 400),
    ),
    # Public: the ticket is the credential (a forged one is no place in any line).
    "poll a place in line": (
        lambda w: ("GET", "/queue/wq1.forged", None),
        (404, 404, 404, 404, 404, 404),
    ),
}

# Changes that can happen once: each caller gets a fresh world's objects.
CHANGES: dict[str, tuple[Request, tuple[int, ...]]] = {
    "confirm hold": (
        lambda w: ("POST", f"/holds/{w.hold_id}/confirm", {}),
        (401, 201, 404, 201, 404, 201),
    ),
    "release hold": (
        lambda w: ("DELETE", f"/holds/{w.hold_id}", None),
        (401, 204, 404, 204, 404, 204),
    ),
    "cancel booking": (
        lambda w: ("POST", f"/bookings/{w.booking_id}/cancel", None),
        (401, 200, 404, 200, 404, 200),
    ),
    "revoke a key": (
        lambda w: ("DELETE", f"/keys/{w.keys['customer_b']}", None),
        (401, 403, 403, 403, 403, 204),
    ),
}


async def _call(world: World, who: str, request: Request) -> httpx.Response:
    method, path, body = request(world)
    return await world.http.request(method, path, json=body, headers=world.as_(who))


@pytest.mark.parametrize("endpoint", sorted(EXPECTED))
async def test_every_caller_gets_what_the_table_says(world: World, endpoint: str) -> None:
    request, statuses = EXPECTED[endpoint]
    got = {who: (await _call(world, who, request)).status_code for who in CALLERS}
    assert got == dict(zip(CALLERS, statuses, strict=True))


@pytest.mark.parametrize("endpoint", sorted(CHANGES))
@pytest.mark.parametrize("who", CALLERS)
async def test_changes_only_by_those_allowed(world: World, endpoint: str, who: str) -> None:
    request, statuses = CHANGES[endpoint]
    expected = statuses[CALLERS.index(who)]
    response = await _call(world, who, request)
    assert response.status_code == expected, response.text
    if expected >= 400:
        assert response.headers["content-type"] == "application/problem+json"


async def test_no_key_where_one_is_needed_gets_the_bearer_challenge(world: World) -> None:
    for method, path in (("GET", "/bookings"), ("POST", "/book"), ("GET", "/keys")):
        response = await world.http.request(method, path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"


async def test_two_customers_reusing_one_idempotency_key_book_apart(world: World) -> None:
    """A key is its caller's: Bob's "order-1" neither replays Alice's answer nor clashes."""
    body = {"eventId": world.event["id"], "sectionId": world.event["sections"][0]["id"]}
    answers = {}
    for who in ("customer_a", "customer_b"):
        headers = {**world.as_(who), "Idempotency-Key": "order-1"}
        first = await world.http.post("/book", json={**body, "qty": 1}, headers=headers)
        again = await world.http.post("/book", json={**body, "qty": 1}, headers=headers)
        assert first.status_code == again.status_code == 201, first.text
        assert again.json()["id"] == first.json()["id"]  # replayed for the same caller
        answers[who] = first.json()
    assert answers["customer_a"]["id"] != answers["customer_b"]["id"]
    assert answers["customer_a"]["customerId"] == "alice"
    assert answers["customer_b"]["customerId"] == "bob"


async def test_a_refusal_says_nothing_about_the_key(world: World) -> None:
    wrong = f"{KEY_PREFIX}{'0' * 16}_{'x' * 43}"
    for token in (wrong, "not-a-key", ""):
        response = await world.http.get("/bookings", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["code"] == "unauthorized"
        assert token not in response.text or not token
    # A public read with a broken key is refused too: the client learns at once.
    refused = await world.http.get("/events", headers={"Authorization": f"Bearer {wrong}"})
    assert refused.status_code == 401


async def test_a_customer_key_books_for_its_own_customer_only(world: World) -> None:
    section = world.event["sections"][0]["id"]
    body = {"eventId": world.event["id"], "sectionId": section, "qty": 1}
    own = await world.http.post("/book", json=body, headers=world.as_("customer_a"))
    assert own.json()["customerId"] == "alice"
    for_another = await world.http.post(
        "/book", json={**body, "customerId": "bob"}, headers=world.as_("customer_a")
    )
    assert for_another.status_code == 403
    assert for_another.json()["code"] == "forbidden"


async def test_each_caller_lists_only_the_bookings_it_may_see(world: World) -> None:
    section = world.event["sections"][0]["id"]
    body = {"eventId": world.event["id"], "sectionId": section, "qty": 1}
    await world.http.post("/book", json=body, headers=world.as_("customer_b"))
    other = (
        await world.http.post("/events", json=_event_body(), headers=world.as_("organizer_y"))
    ).json()
    await world.http.post(
        "/book",
        json={"eventId": other["id"], "sectionId": other["sections"][0]["id"], "qty": 1},
        headers=world.as_("customer_b"),
    )

    async def customers(who: str, query: str = "") -> list[str | None]:
        listed = await world.http.get(f"/bookings{query}", headers=world.as_(who))
        return sorted(b["customerId"] or "" for b in listed.json())

    assert await customers("customer_a") == ["alice"]
    assert await customers("customer_a", "?customerId=bob") == []  # filters only narrow
    assert await customers("customer_b") == ["bob", "bob"]
    assert await customers("organizer_x") == ["alice", "bob"]  # its event's bookings
    assert await customers("organizer_y") == ["bob"]
    assert await customers("admin") == ["alice", "bob", "bob"]


async def test_an_organizer_sells_for_a_named_customer_in_its_own_events_only(
    world: World,
) -> None:
    section = world.event["sections"][0]["id"]
    body = {"eventId": world.event["id"], "sectionId": section, "qty": 1, "customerId": "walk-in"}
    own = await world.http.post("/book", json=body, headers=world.as_("organizer_x"))
    assert own.status_code == 201
    assert own.json()["customerId"] == "walk-in"
    stranger = await world.http.post("/book", json=body, headers=world.as_("organizer_y"))
    assert stranger.status_code == 404
    assert stranger.json()["code"] == "not_found"


async def test_an_organizer_creates_events_for_itself_only(world: World) -> None:
    body = {**_event_body(), "organizerId": "someone-else"}
    refused = await world.http.post("/events", json=body, headers=world.as_("organizer_x"))
    assert refused.status_code == 403
    made = await world.http.post("/events", json=body, headers=world.as_("admin"))
    assert made.status_code == 201
    assert "organizerId" not in made.json()  # no internal fields in answers


async def test_a_revoked_key_and_an_expired_key_are_refused(
    world: World, database: Database
) -> None:
    made = await world.http.post(
        "/keys", json={"role": "customer", "customerId": "dave"}, headers=world.as_("admin")
    )
    assert made.status_code == 201
    assert made.headers["cache-control"] == "no-store"
    token = made.json()["key"]
    assert token.startswith(KEY_PREFIX)
    mine = {"Authorization": f"Bearer {token}"}
    assert (await world.http.get("/bookings", headers=mine)).status_code == 200
    listed = (await world.http.get("/keys", headers=world.as_("admin"))).json()
    assert all("key" not in key and "secret" not in str(key) for key in listed)
    revoked = await world.http.delete(f"/keys/{made.json()['id']}", headers=world.as_("admin"))
    assert revoked.status_code == 204
    assert (await world.http.get("/bookings", headers=mine)).status_code == 401

    soon = await world.http.post(
        "/keys",
        json={"role": "customer", "customerId": "erin", "expiresAt": "2000-01-01T00:00:00Z"},
        headers=world.as_("admin"),
    )
    assert soon.status_code == 400  # an expiry in the past is refused outright


async def test_an_expired_key_stops_working_when_it_expires(
    settings: Settings, database: Database
) -> None:
    from datetime import timedelta

    from boxoffice.services.clock import FakeClock
    from boxoffice.services.keys import create_key

    clock = FakeClock()
    made = await create_key(
        database,
        role="customer",
        customer_id="frank",
        now=clock(),
        expires_at=clock() + timedelta(minutes=5),
    )
    app = create_app(settings, database, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = {"Authorization": f"Bearer {made.token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            assert (await http.get("/bookings")).status_code == 200
            clock.advance(5 * 60)
            assert (await http.get("/bookings")).status_code == 401


async def test_a_revocation_elsewhere_takes_effect_within_the_cache_time(
    settings: Settings, database: Database
) -> None:
    """Another process revoked the key: this one refuses it once its verdict is older
    than KEY_CACHE_SECONDS (0.5 s here)."""
    from datetime import UTC, datetime

    from boxoffice.services.keys import create_key, revoke_key

    made = await create_key(database, role="customer", customer_id="gina", now=datetime.now(UTC))
    quick = settings.model_copy(update={"key_cache_seconds": 0.5})
    app = create_app(quick, database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = {"Authorization": f"Bearer {made.token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            assert (await http.get("/bookings")).status_code == 200
            await revoke_key(database, made.key.id, datetime.now(UTC))  # not through this app
            await asyncio.sleep(0.6)
            assert (await http.get("/bookings")).status_code == 401


async def test_open_access_is_the_original_open_api(settings: Settings, database: Database) -> None:
    app = create_app(settings.model_copy(update={"boxoffice_open_access": True}), database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            event = (await http.post("/events", json=_event_body())).json()
            section = event["sections"][0]["id"]
            booked = await http.post(
                "/book",
                json={"eventId": event["id"], "sectionId": section, "qty": 1, "customerId": "h"},
            )
            assert booked.status_code == 201
            assert booked.json()["customerId"] == "h"
            assert (await http.get("/bookings")).status_code == 200


# Which row of the tables above covers each operation of the OpenAPI document.
ROWS_BY_OPERATION = {
    "list_events": "list events",
    "get_event": "get event",
    "create_event": "create event",
    "create_event_legacy": "create event (original path)",
    "event_audit": "event audit trail",
    "event_flags": "event flags",
    "all_flags": "all flags",
    "book": "book",
    "place_hold": "hold",
    "list_bookings": "list bookings",
    "get_booking": "get booking",
    "get_hold": "get hold",
    "list_keys": "list keys",
    "create_key": "make a key",
    "healthz": "healthz",
    "readyz": "readyz",
    "metrics": "metrics",
    "confirm_hold": "confirm hold",
    "release_hold": "release hold",
    "cancel_booking": "cancel booking",
    "revoke_key": "revoke a key",
    "put_waiting_room": "set up the waiting room",
    "get_waiting_room": "read the waiting room",
    "join_queue": "join the line",
    "poll_queue": "poll a place in line",
}


async def test_the_tables_cover_every_operation(world: World) -> None:
    """A new endpoint must get its row: who may call it is part of adding it."""
    document = (await world.http.get("/openapi.json")).json()
    operations = {
        operation["operationId"]
        for path in document["paths"].values()
        for operation in path.values()
    }
    assert operations == set(ROWS_BY_OPERATION) == set(PERMISSIONS)
    assert set(ROWS_BY_OPERATION.values()) == set(EXPECTED) | set(CHANGES)


ROLE_OF: dict[str, Role | None] = {
    "public": None,
    "customer_a": "customer",
    "customer_b": "customer",
    "organizer_x": "organizer",
    "organizer_y": "organizer",
    "admin": "admin",
}


@pytest.mark.parametrize("operation", sorted(PERMISSIONS))
def test_the_permission_table_agrees(operation: str) -> None:
    """Generated from `PERMISSIONS`: who gets 401 (no key where one is needed), who 403
    (a role it does not allow) and who neither; checked against the hand-written row."""
    rule = PERMISSIONS[operation]
    row = ROWS_BY_OPERATION[operation]
    _, statuses = EXPECTED.get(row) or CHANGES[row]
    for who, status in zip(CALLERS, statuses, strict=True):
        role = ROLE_OF[who]
        if rule.public:
            assert status not in (401, 403), (operation, who)
        elif role is None:
            assert status == 401, (operation, who)
        elif rule.allows(role):
            assert status not in (401, 403), (operation, who)
        else:
            assert status == 403, (operation, who)


async def test_keys_made_in_bulk_each_name_their_own_customer(
    settings: Settings, database: Database
) -> None:
    """`create_customer_keys` (the load tests' many customers): one working key per
    customer, in order, each acting as that customer only."""
    from datetime import UTC, datetime

    from boxoffice.services.keys import create_customer_keys, find_key

    tokens = await create_customer_keys(database, ["ann", "bob", "cy"], datetime.now(UTC))
    assert len(set(tokens)) == 3
    found = [await find_key(database, token) for token in tokens]
    assert [key.customer_id if key else None for key in found] == ["ann", "bob", "cy"]
    assert {key.role if key else None for key in found} == {"customer"}
    app = create_app(settings, database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            mine = await http.get("/bookings", headers={"Authorization": f"Bearer {tokens[1]}"})
            assert mine.status_code == 200
            forged = tokens[1][:-4] + "AAAA"
            assert (
                await http.get("/bookings", headers={"Authorization": f"Bearer {forged}"})
            ).status_code == 401


def _who(operation: str) -> str:
    rule = PERMISSIONS[operation]
    if rule.public:
        return "anyone, no key needed"
    if set(rule.roles) | {"admin"} == set(ROLE_OF.values()) - {None}:
        return "any key"
    return ", ".join([*(role for role in rule.roles if role != "admin"), "admin"])


async def test_the_docs_table_is_the_permission_table(world: World) -> None:
    """docs/security.md's table of who may call what is `PERMISSIONS`, row for row, in the
    OpenAPI document's order. On a failure, paste the table this prints into the doc."""
    document = (await world.http.get("/openapi.json")).json()
    rows = [
        "| operation | who may call it | which objects |",
        "|---|---|---|",
        *(
            f"| `{method.upper()} {path}` | {_who(operation['operationId'])} | "
            f"{PERMISSIONS[operation['operationId']].objects} |"
            for path, item in document["paths"].items()
            for method, operation in item.items()
        ),
    ]
    table = "\n".join(rows)
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    assert table in doc, f"docs/security.md should carry this table:\n\n{table}\n"
