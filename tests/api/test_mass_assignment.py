"""Mass assignment (OWASP API3): no request body sets what its role may not.

Every write endpoint that takes a body is sent a valid body plus one property a
client must never set (a price, a status, a count, an owner, an id, a time), by a
caller who may otherwise make the call. Each is refused, 400 naming the property
or 403 for an owner the role may not name, and nothing changes anywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from tests.api.conftest import assert_problem
from tests.support.keys import bearer


@dataclass
class Shop:
    http: httpx.AsyncClient
    admin: dict[str, str]
    organizer: dict[str, str]
    alice: dict[str, str]
    event: dict[str, Any]
    hold_id: str

    async def state(self) -> list[Any]:
        """Everything a write could have changed, as the admin sees it."""
        found = []
        for path in ("/events", f"/events/{self.event['id']}", "/bookings", "/keys"):
            answer = await self.http.get(path, headers=self.admin)
            assert answer.status_code == 200, answer.text
            found.append(answer.json())
        room = await self.http.get(f"/events/{self.event['id']}/waiting-room", headers=self.admin)
        found.append((room.status_code, room.json()))
        hold = await self.http.get(f"/holds/{self.hold_id}", headers=self.admin)
        found.append(hold.json())
        return found


@pytest.fixture
async def shop(settings: Settings, database: Database) -> AsyncIterator[Shop]:
    app = create_app(settings, database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            admin = await bearer(database)
            organizer = await bearer(database, "organizer")
            alice = await bearer(database, "customer", customer_id="alice")
            event = (
                await http.post(
                    "/events",
                    json={"name": "Gig", "sections": [{"name": "GA", "price": 5, "capacity": 9}]},
                    headers=organizer,
                )
            ).json()
            section = event["sections"][0]["id"]
            hold = await http.post(
                "/holds",
                json={"eventId": event["id"], "items": [{"sectionId": section, "qty": 1}]},
                headers=alice,
            )
            assert hold.status_code == 201, hold.text
            booked = await http.post(
                "/book",
                json={"eventId": event["id"], "sectionId": section, "qty": 1},
                headers=alice,
            )
            assert booked.status_code == 201, booked.text
            yield Shop(http, admin, organizer, alice, event, hold.json()["id"])


EVENT = {"name": "New", "sections": [{"name": "A", "price": 5, "capacity": 5}]}
ROOM = {"enabled": False, "newUsersPerMinute": 10, "totalActiveUsers": 10}
FORGED_ID = "00000000-0000-4000-8000-000000000001"

# (who calls, method, path, valid body, property to set, its value, expected status)
ATTEMPTS: list[tuple[str, str, str, dict[str, Any], str, Any, int]] = [
    *(
        ("organizer", "POST", path, EVENT, prop, value, 400)
        for path in ("/events", "/events/create")
        for prop, value in [
            ("id", FORGED_ID),
            ("createdAt", "2020-01-01T00:00:00Z"),
            ("remaining", 0),
            ("sold", 5),
            ("held", 5),
            ("status", "cancelled"),
            ("ownerId", "someone"),
        ]
    ),
    ("organizer", "POST", "/events", EVENT, "organizerId", "0123456789abcdef", 403),
    *(
        (
            "organizer",
            "POST",
            "/events",
            {"name": "New", "sections": [section]},
            "section",
            None,
            400,
        )
        for section in (
            {"name": "A", "price": 5, "capacity": 5, "remaining": 0},
            {"name": "A", "price": 5, "capacity": 5, "sold": 5},
            {"name": "A", "price": 5, "capacity": 5, "id": FORGED_ID},
        )
    ),
    *(
        ("alice", "POST", "/book", {"qty": 1}, prop, value, 400)
        for prop, value in [
            ("price", 0),
            ("unitPrice", 0),
            ("totalPrice", 0),
            ("status", "confirmed"),
            ("id", FORGED_ID),
            ("holdId", FORGED_ID),
            ("createdAt", "2020-01-01T00:00:00Z"),
            ("paymentReference", "pi_free"),
            ("organizerId", "0123456789abcdef"),
        ]
    ),
    ("alice", "POST", "/book", {"qty": 1}, "customerId", "bob", 403),
    *(
        ("alice", "POST", "/holds", {"qty": 1}, prop, value, 400)
        for prop, value in [
            ("status", "confirmed"),
            ("expiresAt", "2099-01-01T00:00:00Z"),
            ("totalPrice", 0),
            ("id", FORGED_ID),
            ("createdAt", "2020-01-01T00:00:00Z"),
            ("ttlSeconds", 86_400),
        ]
    ),
    ("alice", "POST", "/holds", {"qty": 1}, "customerId", "bob", 403),
    ("alice", "POST", "/holds", {"qty": 1}, "item", {"unitPrice": 0}, 400),
    ("alice", "POST", "/holds", {"qty": 1}, "item", {"totalPrice": 0}, 400),
    *(
        ("alice", "POST", "/holds/{hold_id}/confirm", {}, prop, value, 400)
        for prop, value in [
            ("status", "confirmed"),
            ("customerId", "bob"),
            ("totalPrice", 0),
            ("bookings", []),
            ("expiresAt", "2099-01-01T00:00:00Z"),
        ]
    ),
    *(
        ("admin", "POST", "/keys", {"role": "customer", "customerId": "c9"}, prop, value, 400)
        for prop, value in [
            ("id", "0123456789abcdef"),
            ("key", "bo_live_0123456789abcdef_chosen"),
            ("secretSha256", "0" * 64),
            ("revokedAt", "2099-01-01T00:00:00Z"),
            ("createdAt", "2020-01-01T00:00:00Z"),
        ]
    ),
    *(
        ("organizer", "PUT", "/events/{event_id}/waiting-room", ROOM, prop, value, 400)
        for prop, value in [
            ("eventId", FORGED_ID),
            ("waiting", 0),
            ("shopping", 0),
            ("admitted", 1_000_000),
            ("watermark", 1_000_000),
            ("soldOut", True),
            ("organizerId", "0123456789abcdef"),
            ("secret", "chosen"),
        ]
    ),
    *(
        ("alice", "POST", "/events/{event_id}/queue", {}, prop, value, 400)
        for prop, value in [
            ("ticket", "wq1.chosen"),
            ("position", 1),
            ("status", "admitted"),
            ("admissionToken", "wa1.chosen"),
            ("orderKey", 0),
        ]
    ),
    ("alice", "POST", "/events/{event_id}/queue", {}, "customerId", "bob", 403),
]


ENDPOINTS = sorted({path for _, _, path, *_ in ATTEMPTS})


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_no_body_sets_what_its_caller_may_not(shop: Shop, endpoint: str) -> None:
    """Every attempt on `endpoint`, one after another on one shop: each is refused and
    leaves everything as it was."""
    section = shop.event["sections"][0]["id"]
    for who, method, path, body, prop, value, status in ATTEMPTS:
        if path != endpoint:
            continue
        sent = dict(body)
        if path == "/book":
            sent.update(eventId=shop.event["id"], sectionId=section)
        elif path == "/holds":
            item: dict[str, Any] = {"sectionId": section, "qty": sent.pop("qty")}
            if prop == "item":
                item.update(value)
            sent.update(eventId=shop.event["id"], items=[item])
        if prop not in ("item", "section"):
            sent[prop] = value
        before = await shop.state()
        answer = await shop.http.request(
            method,
            path.format(hold_id=shop.hold_id, event_id=shop.event["id"]),
            json=sent,
            headers=getattr(shop, who),
        )
        code = "validation_error" if status == 400 else "forbidden"
        problem = assert_problem(answer, status, code)
        if status == 400 and prop not in ("item", "section"):
            assert any(error["field"].endswith(prop) for error in problem["errors"]), problem
        assert await shop.state() == before, (who, path, prop)


async def test_every_write_that_takes_a_body_is_tried(shop: Shop) -> None:
    """A new write endpoint must get its attempts: what its body may not set is part of
    adding it."""
    document = (await shop.http.get("/openapi.json")).json()
    writes = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    }
    assert writes == {(method, path) for _, method, path, *_ in ATTEMPTS}
