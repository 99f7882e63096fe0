"""The waiting room over HTTP: every state of a ticket and every refusal, on both databases.

The app's clock is moved by the test, and the admission loop's turns are
taken by the test (`watch.tick()`), so each step is seen exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from boxoffice.api.access import PRINCIPAL
from boxoffice.api.app import create_app
from boxoffice.api.fast_routes import FastRoutes
from boxoffice.api.routes.waiting_room import FAST_JOIN, PollFastPath
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.services.clock import FakeClock
from boxoffice.services.rate_limits import Quota
from boxoffice.services.room_watch import RoomWatch
from boxoffice.services.waiting_room import FIFO_BUCKETS
from tests.api.conftest import assert_problem
from tests.support.fast_paths import through_fast_path
from tests.support.keys import bearer

ROOM = {"newUsersPerMinute": 2, "totalActiveUsers": 2, "sessionDurationSeconds": 600}


@dataclass
class Sale:
    http: httpx.AsyncClient
    app: FastAPI
    clock: FakeClock
    database: Database
    admin: dict[str, str]

    @property
    def watch(self) -> RoomWatch:
        watch: RoomWatch = self.app.state.room_watch
        return watch

    async def customer(self, name: str) -> dict[str, str]:
        return await bearer(self.database, "customer", customer_id=name)

    async def event(self, capacity: int = 10, **extra: Any) -> dict[str, Any]:
        made = await self.http.post(
            "/events",
            json={
                "name": "Stadium",
                "sections": [{"name": "GA", "price": 30, "capacity": capacity}],
                **extra,
            },
            headers=self.admin,
        )
        assert made.status_code == 201, made.text
        return dict(made.json())

    async def room(self, event: dict[str, Any], **settings: Any) -> httpx.Response:
        return await self.http.put(
            f"/events/{event['id']}/waiting-room", json={**ROOM, **settings}, headers=self.admin
        )

    async def join(self, event: dict[str, Any], who: dict[str, str]) -> dict[str, Any]:
        joined = await self.http.post(f"/events/{event['id']}/queue", headers=who)
        assert joined.status_code == 201, joined.text
        assert joined.headers["location"] == f"/queue/{joined.json()['ticket']}"
        return dict(joined.json())

    async def poll(self, ticket: str) -> httpx.Response:
        self.clock.advance(31)  # past any pollAfterSeconds
        return await self.http.get(f"/queue/{ticket}")

    async def book(
        self, event: dict[str, Any], who: dict[str, str], token: str | None, qty: int = 1
    ) -> httpx.Response:
        headers = {**who, **({} if token is None else {"Admission-Token": token})}
        body = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": qty}
        return await self.http.post("/book", json=body, headers=headers)


@contextlib.asynccontextmanager
async def open_sale(settings: Settings, database: Database, **changes: Any) -> AsyncIterator[Sale]:
    """An app on `database` whose clock and loops the test drives, with `changes` to its
    settings."""
    clock = FakeClock()
    quiet = settings.model_copy(
        update={
            "hold_sweep_interval_seconds": 0,
            "metrics_sample_seconds": 0,
            # The test takes the loops' turns itself.
            "waiting_room_refresh_ms": 5000,
            "waiting_room_tick_ms": 10_000,
            "waiting_room_clock_skew_ms": 0,
            "rate_limits_enabled": False,
            **changes,
        }
    )
    app = create_app(quiet, database, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Sale(http, app, clock, database, await bearer(database))


@pytest.fixture
async def sale(settings: Settings, database: Database) -> AsyncIterator[Sale]:
    async with open_sale(settings, database) as opened:
        yield opened


async def test_an_organizer_sets_up_reads_and_changes_a_room(sale: Sale) -> None:
    event = await sale.event()
    put = await sale.room(event, queueingMethod="random")
    assert put.status_code == 200, put.text
    room = put.json()
    assert room["eventId"] == event["id"]
    assert room["enabled"] is True
    assert room["queueingMethod"] == "random"
    assert room["figures"] is None  # the admission loop has not measured anything yet
    await sale.watch.tick()
    got = (await sale.http.get(f"/events/{event['id']}/waiting-room", headers=sale.admin)).json()
    assert got["figures"]["state"] == "open"
    assert got["figures"]["seatsLeft"] == 10
    assert got["figures"]["waiting"] == 0
    paused = await sale.room(event, suspended=True)
    assert paused.json()["suspended"] is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"totalActiveUsers": 1, "newUsersPerMinute": 2}, "totalActiveUsers"),
        ({"sessionDurationSeconds": 5}, "sessionDurationSeconds"),
        ({"newUsersPerMinute": 0}, "newUsersPerMinute"),
        ({"queueingMethod": "lottery"}, "queueingMethod"),
        ({"opensAt": "2026-12-24T10:00:00"}, "opensAt"),  # no time zone
        (
            {"opensAt": "2026-12-24T10:00:00Z", "prequeueOpensAt": "2026-12-24T11:00:00Z"},
            "prequeueOpensAt",
        ),
        ({"prequeueOpensAt": "2026-12-24T11:00:00Z"}, "prequeueOpensAt"),  # no opensAt
        ({"owner": "me"}, "owner"),
    ],
)
async def test_bad_room_settings_are_refused_and_change_nothing(
    sale: Sale, change: dict[str, Any], field: str
) -> None:
    event = await sale.event()
    refused = await sale.room(event, **change)
    problem = assert_problem(refused, 400, "validation_error")
    assert any(field in error["field"] for error in problem["errors"]), problem
    missing = await sale.http.get(f"/events/{event['id']}/waiting-room", headers=sale.admin)
    assert_problem(missing, 404, "not_found")


async def test_only_the_events_managers_set_up_its_room(sale: Sale) -> None:
    event = await sale.event()
    customer = await sale.customer("c1")
    assert_problem(
        await sale.http.put(f"/events/{event['id']}/waiting-room", json=ROOM, headers=customer),
        403,
        "forbidden",
    )
    other = await bearer(sale.database, "organizer", organizer_id="someone-else")
    assert_problem(
        await sale.http.put(f"/events/{event['id']}/waiting-room", json=ROOM, headers=other),
        404,
        "not_found",
    )
    assert_problem(
        await sale.http.put("/events/nope/waiting-room", json=ROOM, headers=sale.admin),
        404,
        "not_found",
    )


async def test_a_customer_waits_is_admitted_buys_and_the_session_ends(sale: Sale) -> None:
    event = await sale.event()
    await sale.room(event)
    alice = await sale.customer("alice")
    refused = await sale.book(event, alice, None)
    assert_problem(refused, 403, "admission_required")
    joined = await sale.join(event, alice)
    assert joined["status"] == "waiting"
    assert joined["position"] == 1
    assert joined["admissionToken"] is None
    assert joined["pollAfterSeconds"] >= 1
    await sale.watch.tick()
    admitted = (await sale.poll(joined["ticket"])).json()
    assert admitted["status"] == "admitted"
    token = admitted["admissionToken"]
    assert token.startswith("wa1.")
    booked = await sale.book(event, alice, token, qty=2)
    assert booked.status_code == 201, booked.text
    again = await sale.book(event, alice, token)  # any number of purchases in the session
    assert again.status_code == 201, again.text
    sale.clock.now = sale.clock.now.replace() + timedelta(seconds=600)
    expired = (await sale.poll(joined["ticket"])).json()
    assert expired["status"] == "expired"
    assert expired["admissionToken"] is None
    assert_problem(await sale.book(event, alice, token), 403, "admission_invalid")


async def test_tokens_of_others_forged_or_for_another_event_are_refused(sale: Sale) -> None:
    event, other_event = await sale.event(), await sale.event()
    await sale.room(event)
    await sale.room(other_event)
    alice, bob = await sale.customer("alice"), await sale.customer("bob")
    ticket = (await sale.join(event, alice))["ticket"]
    await sale.watch.tick()
    token = (await sale.poll(ticket)).json()["admissionToken"]
    assert_problem(await sale.book(event, bob, token), 403, "admission_invalid")
    assert_problem(await sale.book(other_event, alice, token), 403, "admission_invalid")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert_problem(await sale.book(event, alice, forged), 403, "admission_invalid")
    assert_problem(await sale.book(event, alice, "not-a-token"), 403, "admission_invalid")
    hold = await sale.http.post(
        "/holds",
        json={
            "eventId": event["id"],
            "items": [{"sectionId": event["sections"][0]["id"], "qty": 1}],
        },
        headers=bob,
    )
    assert_problem(hold, 403, "admission_required")
    seats = (await sale.http.get(f"/events/{event['id']}")).json()["sections"][0]
    assert seats["remaining"] == 10  # nothing refused changed anything


async def test_one_place_per_customer_however_many_joins_race(sale: Sale) -> None:
    event = await sale.event()
    await sale.room(event)
    alice = await sale.customer("alice")
    joins = await asyncio.gather(
        *(sale.http.post(f"/events/{event['id']}/queue", headers=alice) for _ in range(8))
    )
    assert {join.status_code for join in joins} == {201}
    assert len({join.json()["ticket"] for join in joins}) == 1
    await sale.watch.tick()
    figures = (
        await sale.http.get(f"/events/{event['id']}/waiting-room", headers=sale.admin)
    ).json()["figures"]
    assert figures["admitted"] == 1


async def test_admissions_follow_the_pace_and_the_line_order(sale: Sale) -> None:
    event = await sale.event(capacity=100)
    await sale.room(event)  # 2 a minute, 2 inside at once
    tickets = []
    for name in ("a", "b", "c", "d"):
        tickets.append((await sale.join(event, await sale.customer(name)))["ticket"])
    await sale.watch.tick()
    await sale.watch.tick()  # at once: the pace spreads the minute's two 30 s apart
    statuses = [(await sale.poll(ticket)).json() for ticket in tickets]
    assert [s["status"] for s in statuses] == ["admitted", "waiting", "waiting", "waiting"]
    assert [s["position"] for s in statuses[1:]] == [1, 2, 3]
    assert statuses[1]["estimatedWaitSeconds"] is not None
    await sale.watch.tick()  # the polls took two minutes: the next one's turn
    await sale.watch.tick()
    statuses = [(await sale.poll(ticket)).json() for ticket in tickets]
    assert [s["status"] for s in statuses] == ["admitted", "admitted", "waiting", "waiting"]
    assert [s["position"] for s in statuses[2:]] == [1, 2]
    await sale.watch.tick()  # two minutes on again: two inside at once, nobody more
    assert (await sale.poll(tickets[2])).json()["status"] == "waiting"


async def test_a_room_turned_off_and_on_again_restarts_at_its_pace(sale: Sale) -> None:
    """Its bucket filled while the room was off: turned on again, the line starts at its
    pace (one now, the next as the pace allows), not with a burst."""
    event = await sale.event(capacity=100)
    pace = {"newUsersPerMinute": 120, "totalActiveUsers": 120}  # 2 a second, 11 at once
    await sale.room(event, **pace)
    for n in range(30):
        await sale.join(event, await sale.customer(f"c{n}"))

    async def admitted() -> int:
        await sale.watch.tick()
        got = await sale.http.get(f"/events/{event['id']}/waiting-room", headers=sale.admin)
        return int(got.json()["figures"]["admitted"])

    assert await admitted() == 11  # a new room's first tick: the burst
    await sale.room(event, enabled=False, **pace)
    sale.clock.advance(120)
    await sale.room(event, **pace)
    await sale.watch.refresh()
    assert await admitted() == 12
    sale.clock.advance(0.5)
    assert await admitted() == 13  # then the pace: 2 a second


async def test_the_stock_holds_admissions_and_sold_out_tells_everyone(sale: Sale) -> None:
    event = await sale.event(capacity=3, maxPerCustomer=3)
    await sale.room(event, newUsersPerMinute=6000, totalActiveUsers=6000)  # 100 at once
    names = ("a", "b", "c")
    keys = {name: await sale.customer(name) for name in names}
    tickets = {name: (await sale.join(event, keys[name]))["ticket"] for name in names}
    await sale.watch.tick()
    # 3 seats, and a shopper is expected to take 3 (the per-customer limit): one let in.
    states = {name: (await sale.poll(tickets[name])).json()["status"] for name in names}
    assert states == {"a": "admitted", "b": "waiting", "c": "waiting"}
    figures = (
        await sale.http.get(f"/events/{event['id']}/waiting-room", headers=sale.admin)
    ).json()["figures"]
    assert figures["limitedBy"] == "stock"
    token = (await sale.poll(tickets["a"])).json()["admissionToken"]
    assert (await sale.book(event, keys["a"], token, qty=3)).status_code == 201
    await sale.watch.tick()
    await sale.watch.refresh()
    assert (await sale.poll(tickets["b"])).json()["status"] == "sold_out"
    assert (await sale.poll(tickets["c"])).json()["status"] == "sold_out"


@pytest.mark.parametrize(("grace", "held_for"), [(120, 120), (0, 600)])
async def test_a_shopper_who_never_tries_holds_the_stock_for_the_grace_only(
    settings: Settings, database: Database, grace: int, held_for: int
) -> None:
    """Admitted and never trying to buy, a shopper keeps the last seats from the line for
    WAITING_ROOM_SHOPPER_GRACE_SECONDS (0: for its whole session, 600 s here); then the
    next one is let in, and the idle one keeps its token until its session ends."""
    async with open_sale(settings, database, waiting_room_shopper_grace_seconds=grace) as sale:
        event = await sale.event(capacity=3, maxPerCustomer=3)
        await sale.room(event, newUsersPerMinute=100, totalActiveUsers=100)
        idle, next_one = await sale.customer("idle"), await sale.customer("next")
        tickets = [(await sale.join(event, who))["ticket"] for who in (idle, next_one)]
        await sale.watch.tick()
        states = [(await sale.poll(t)).json()["status"] for t in tickets]
        assert states == ["admitted", "waiting"]
        # The two polls moved the clock 62 s; 10 s before the seats are let go:
        sale.clock.advance(held_for - 62 - 10)
        await sale.watch.tick()
        assert (await sale.poll(tickets[1])).json()["status"] == "waiting"  # idle's seats
        await sale.watch.tick()  # 21 s after
        states = [(await sale.poll(t)).json()["status"] for t in tickets]
        assert states == ["admitted" if grace else "expired", "admitted"]


async def test_the_pre_queue_waits_for_the_opening(sale: Sale) -> None:
    event = await sale.event()
    opens = sale.clock.now + timedelta(minutes=10)
    await sale.room(
        event,
        opensAt=opens.isoformat(),
        prequeueOpensAt=(opens - timedelta(minutes=5)).isoformat(),
    )
    alice = await sale.customer("alice")
    closed = await sale.http.post(f"/events/{event['id']}/queue", headers=alice)
    problem = assert_problem(closed, 409, "queue_not_open")
    assert problem["opensAt"].startswith((opens - timedelta(minutes=5)).isoformat()[:16])
    sale.clock.advance(6 * 60)
    ticket = (await sale.join(event, alice))["ticket"]
    await sale.watch.tick()
    assert (await sale.poll(ticket)).json()["status"] == "waiting"  # before opensAt
    sale.clock.now = opens
    await sale.watch.tick()
    assert (await sale.poll(ticket)).json()["status"] == "admitted"


async def test_a_suspended_room_admits_nobody_and_keeps_the_line(sale: Sale) -> None:
    event = await sale.event()
    await sale.room(event, suspended=True)
    ticket = (await sale.join(event, await sale.customer("alice")))["ticket"]
    await sale.watch.tick()
    assert (await sale.poll(ticket)).json()["status"] == "waiting"
    await sale.room(event, suspended=False)
    await sale.watch.tick()
    assert (await sale.poll(ticket)).json()["status"] == "admitted"


async def test_polling_faster_than_told_is_rate_limited(sale: Sale) -> None:
    event = await sale.event()
    await sale.room(event)
    joined = await sale.join(event, await sale.customer("alice"))
    too_soon = await sale.http.get(f"/queue/{joined['ticket']}")
    problem = assert_problem(too_soon, 429, "poll_too_soon")
    assert int(too_soon.headers["retry-after"]) >= 1
    assert problem["detail"]
    sale.clock.advance(joined["pollAfterSeconds"])
    assert (await sale.http.get(f"/queue/{joined['ticket']}")).status_code == 200


async def test_forged_and_malformed_tickets_are_refused(sale: Sale) -> None:
    event = await sale.event()
    await sale.room(event)
    ticket = (await sale.join(event, await sale.customer("alice")))["ticket"]
    better = ticket[:10] + ("A" if ticket[10] != "A" else "B") + ticket[11:]
    assert_problem(await sale.poll(better), 404, "queue_ticket_invalid")
    assert_problem(await sale.poll("wq1.nonsense"), 404, "queue_ticket_invalid")
    assert_problem(await sale.poll("x" * 600), 404, "queue_ticket_invalid")


async def test_joining_without_a_room_or_a_customer_is_refused(sale: Sale) -> None:
    event = await sale.event()
    alice = await sale.customer("alice")
    no_room = await sale.http.post(f"/events/{event['id']}/queue", headers=alice)
    assert_problem(no_room, 409, "queue_not_open")
    assert_problem(await sale.http.post("/events/nope/queue", headers=alice), 404, "not_found")
    await sale.room(event)
    staff = await sale.http.post(f"/events/{event['id']}/queue", headers=sale.admin)
    problem = assert_problem(staff, 400, "validation_error")
    assert problem["errors"][0]["field"] == "customerId"
    organizer = await bearer(sale.database, "organizer", organizer_id="o1")
    assert_problem(
        await sale.http.post(f"/events/{event['id']}/queue", headers=organizer), 403, "forbidden"
    )
    await sale.room(event, queueingMethod="reject")
    assert_problem(
        await sale.http.post(f"/events/{event['id']}/queue", headers=alice), 409, "queue_not_open"
    )


async def test_a_room_turned_on_elsewhere_takes_joins_before_this_process_refreshes(
    sale: Sale, settings: Settings, database: Database
) -> None:
    """A room turned on through one process: another, whose view is a refresh old, reads
    it on the first join rather than telling the customer there is no line."""
    async with open_sale(settings, database) as other:  # started before the room existed
        event = await sale.event()
        assert other.watch.view(event["id"]) is None
        await sale.room(event)
        alice = await other.customer("alice")
        joined = await other.join(event, alice)
        assert joined["status"] == "waiting"
        assert other.watch.view(event["id"]) is not None  # kept: the next join reads nothing
        again = await sale.join(event, alice)
        assert again["ticket"] == joined["ticket"]  # one place, whichever process is asked
        plain = await sale.event()  # no room: still refused, still nothing kept
        refused = await other.http.post(f"/events/{plain['id']}/queue", headers=alice)
        assert_problem(refused, 409, "queue_not_open")
        assert other.watch.view(plain["id"]) is None


async def test_staff_sell_without_a_token_and_passthrough_or_off_needs_none(sale: Sale) -> None:
    event = await sale.event()
    await sale.room(event)
    body = {
        "eventId": event["id"],
        "sectionId": event["sections"][0]["id"],
        "qty": 1,
        "customerId": "walk-in",
    }
    assert (await sale.http.post("/book", json=body, headers=sale.admin)).status_code == 201
    alice = await sale.customer("alice")
    await sale.room(event, queueingMethod="passthrough")
    assert (await sale.book(event, alice, None)).status_code == 201
    await sale.room(event, enabled=False)
    assert (await sale.book(event, alice, None)).status_code == 201


async def test_a_restart_loses_nobodys_place(
    sale: Sale, settings: Settings, database: Database
) -> None:
    """Another process (or this one restarted) reads the line from the database: the same
    secret, the same keys, the same watermark; tickets issued before it keep their place."""
    event = await sale.event(capacity=100)
    await sale.room(event, newUsersPerMinute=1, totalActiveUsers=1)
    first = (await sale.join(event, await sale.customer("first")))["ticket"]
    second = (await sale.join(event, await sale.customer("second")))["ticket"]
    await sale.watch.tick()
    quiet = settings.model_copy(
        update={"waiting_room_refresh_ms": 5000, "waiting_room_tick_ms": 10_000}
    )
    restarted = create_app(quiet, database, clock=sale.clock)
    async with restarted.router.lifespan_context(restarted):
        transport = httpx.ASGITransport(app=restarted, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            sale.clock.advance(31)
            assert (await http.get(f"/queue/{first}")).json()["status"] == "admitted"
            waiting = (await http.get(f"/queue/{second}")).json()
            assert waiting["status"] == "waiting"
            assert waiting["position"] == 1
            again = await http.post(
                f"/events/{event['id']}/queue", headers=await sale.customer("second")
            )
            assert again.json()["ticket"] == second  # joining again: the same place


async def test_the_operator_caps_how_long_anyone_is_told_to_wait(
    sale: Sale, settings: Settings, database: Database
) -> None:
    """WAITING_ROOM_MAX_POLL_SECONDS bounds every pollAfterSeconds (waiting far back,
    admitted, the room off), and the pacing holds a client to what it was told."""
    event = await sale.event(capacity=100)
    await sale.room(event, suspended=True)  # 2 a minute: the fourth place waits 2 minutes
    joins = [await sale.join(event, await sale.customer(n)) for n in "abcd"]
    first, last = joins[0]["ticket"], joins[3]["ticket"]
    await sale.watch.tick()  # publishes the line: nobody let in
    await sale.watch.refresh()
    waiting = (await sale.poll(last)).json()
    assert (waiting["position"], waiting["pollAfterSeconds"]) == (4, 12)
    capped = settings.model_copy(
        update={
            "waiting_room_refresh_ms": 5000,
            "waiting_room_tick_ms": 10_000,
            "waiting_room_clock_skew_ms": 0,
            "waiting_room_max_poll_seconds": 3,
        }
    )
    app = create_app(capped, database, clock=sale.clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            sale.clock.advance(31)
            waiting = (await http.get(f"/queue/{last}")).json()
            assert (waiting["status"], waiting["pollAfterSeconds"]) == ("waiting", 3)
            sale.clock.advance(2)
            assert_problem(await http.get(f"/queue/{last}"), 429, "poll_too_soon")
            sale.clock.advance(1)
            assert (await http.get(f"/queue/{last}")).status_code == 200
            room_url = f"/events/{event['id']}/waiting-room"
            await http.put(room_url, json={**ROOM, "suspended": False}, headers=sale.admin)
            await sale.watch.tick()  # the lease holder lets them in
            await app.state.room_watch.refresh()
            admitted = (await http.get(f"/queue/{first}")).json()
            assert (admitted["status"], admitted["pollAfterSeconds"]) == ("admitted", 3)
            off = await http.put(room_url, json={**ROOM, "enabled": False}, headers=sale.admin)
            assert off.status_code == 200, off.text
            sale.clock.advance(3)
            free = (await http.get(f"/queue/{last}")).json()
            assert (free["status"], free["pollAfterSeconds"]) == ("admitted", 3)
    await sale.watch.refresh()  # the uncapped process: the room is off, the default interval
    assert (await sale.poll(last)).json()["pollAfterSeconds"] == 30


async def test_the_operator_sets_how_many_polls_a_wait_takes(
    sale: Sale, settings: Settings, database: Database
) -> None:
    """WAITING_ROOM_POLLS_PER_WAIT: a process told 5 polls per wait tells the same place
    to come back twice as late as one with the default 10, and paces it by that."""
    event = await sale.event(capacity=100)
    await sale.room(event, suspended=True)  # 2 a minute: the fourth place waits 2 minutes
    last = [await sale.join(event, await sale.customer(n)) for n in "abcd"][3]["ticket"]
    await sale.watch.tick()
    await sale.watch.refresh()
    assert (await sale.poll(last)).json()["pollAfterSeconds"] == 12
    fewer = settings.model_copy(update={"waiting_room_polls_per_wait": 5})
    app = create_app(fewer, database, clock=sale.clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await app.state.room_watch.refresh()
            waiting = (await http.get(f"/queue/{last}")).json()
            assert (waiting["position"], waiting["pollAfterSeconds"]) == (4, 24)
            sale.clock.advance(12)  # as often as the default would have it: too soon here
            assert_problem(await http.get(f"/queue/{last}"), 429, "poll_too_soon")


async def test_the_room_is_counted_in_the_metrics(sale: Sale) -> None:
    from tests.api.test_metrics import scrape, value

    before = await scrape(sale.http, sale.admin)
    event = await sale.event()
    await sale.room(event)
    tickets = [(await sale.join(event, await sale.customer(n)))["ticket"] for n in "abc"]
    await sale.watch.tick()  # 2 a minute, spread: one let in, two waiting
    await sale.watch.refresh()
    for ticket in tickets:
        await sale.poll(ticket)
    after = await scrape(sale.http, sale.admin)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("boxoffice_queue_joins_total") == 3
    assert 1 <= grew("boxoffice_queue_join_write_seconds_count") <= 3  # bursts share one
    assert grew("boxoffice_queue_admitted_total") == 1
    assert grew("boxoffice_queue_polls_total", status="admitted") == 1
    assert grew("boxoffice_queue_polls_total", status="waiting") == 2
    assert value(after, "boxoffice_queue_waiting_customers", event_id=event["id"]) == 2
    assert value(after, "boxoffice_queue_shopping_customers", event_id=event["id"]) == 1

    # Turned off, the room has nobody in it, whatever it last measured.
    off = await sale.http.put(
        f"/events/{event['id']}/waiting-room", json={**ROOM, "enabled": False}, headers=sale.admin
    )
    assert off.status_code == 200, off.text
    await sale.watch.refresh()
    closed = await scrape(sale.http, sale.admin)
    assert value(closed, "boxoffice_queue_waiting_customers", event_id=event["id"]) == 0
    assert value(closed, "boxoffice_queue_shopping_customers", event_id=event["id"]) == 0


async def test_a_poll_is_answered_before_the_stack_exactly_as_the_route_answers_it(
    sale: Sale,
) -> None:
    """GET /queue/{ticket} without a key is answered by `PollFastPath`, before the key
    check and FastAPI: the very bytes the route gives (a poll with a key goes to the
    route), in every state; and with the route gone, still answered."""
    event = await sale.event()
    await sale.room(event)
    alice = await sale.customer("alice")
    ticket = (await sale.join(event, alice))["ticket"]
    states = []
    for step in ("waiting", "admitted"):
        if step == "admitted":
            await sale.watch.tick()
        fast = await sale.poll(ticket)
        sale.clock.advance(31)  # the route's poll is on time too, the line unchanged
        routed = await sale.http.get(f"/queue/{ticket}", headers=alice)
        assert fast.status_code == routed.status_code == 200
        assert fast.content == routed.content
        assert fast.headers["content-type"] == routed.headers["content-type"]
        assert "x-request-id" in fast.headers
        states.append(fast.json()["status"])
    assert states == ["waiting", "admitted"]
    # Refusals go on to the route: too soon and forged are the same problems as ever.
    assert_problem(await sale.http.get(f"/queue/{ticket}"), 429, "poll_too_soon")
    assert_problem(await sale.poll("wq1.nonsense"), 404, "queue_ticket_invalid")

    assert any(layer.cls is PollFastPath for layer in sale.app.user_middleware)

    # The middleware alone, in front of an app that must not be reached.
    async def unreachable(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the poll went past the fast path")

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    sale.clock.advance(31)
    scope = {"type": "http", "method": "GET", "path": f"/queue/{ticket}", "headers": []}
    scope["app"] = sale.app
    await PollFastPath(unreachable)(scope, _no_body, send)
    assert sent[0]["status"] == 200
    assert scope["route"].path == "/queue/{ticket}"  # counted under the route's template
    assert json.loads(sent[1]["body"])["status"] == "admitted"


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_a_join_is_answered_below_fastapi_exactly_as_the_route_answers_it(
    sale: Sale, settings: Settings, database: Database
) -> None:
    """POST /events/{id}/queue is answered by `FastRoutes`: the very status, body and
    Location the route gives, for a join and for every refusal, beside an app without it;
    and in front of an app that must not be reached, a join never reaches it, while a
    body the fast path cannot read with certainty goes on to the route, replayed whole."""
    event = await sale.event()
    other = await sale.event()
    await sale.room(event)
    alice = await sale.customer("alice")
    organizer = await bearer(database, "organizer", organizer_id="o1")
    quiet = settings.model_copy(
        update={
            "waiting_room_refresh_ms": 5000,
            "waiting_room_tick_ms": 10_000,
            "rate_limits_enabled": False,
        }
    )
    routed_app = create_app(quiet, database, clock=sale.clock)
    routed_app.user_middleware = [
        layer for layer in routed_app.user_middleware if layer.cls is not FastRoutes
    ]
    json_body = {"Content-Type": "application/json"}
    cases: list[tuple[str, dict[str, str], bytes, int]] = [
        (event["id"], alice, b"", 201),
        (event["id"], {**alice, **json_body}, b"{}", 201),
        (event["id"], {**alice, **json_body}, b'{"customerId": "alice"}', 201),
        (event["id"], {**alice, **json_body}, b'{"customerId": "bob"}', 403),
        (event["id"], {**alice, **json_body}, b'{"customerId": 7}', 400),
        (event["id"], {**alice, **json_body}, b"{not json", 400),
        (event["id"], {**alice, "Content-Type": "text/plain"}, b"alice", 400),
        (event["id"], organizer, b"", 403),
        (event["id"], sale.admin, b"", 400),  # staff name the customer
        (other["id"], alice, b"", 409),  # no room
        ("nope", alice, b"", 404),
    ]
    async with routed_app.router.lifespan_context(routed_app):
        await routed_app.state.room_watch.refresh()
        transport = httpx.ASGITransport(app=routed_app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as routed:
            for event_id, headers, body, status in cases:
                path = f"/events/{event_id}/queue"
                fast = await sale.http.post(path, content=body, headers=headers)
                slow = await routed.post(path, content=body, headers=headers)
                assert fast.status_code == slow.status_code == status, (body, fast.text)
                assert fast.content == slow.content, body
                assert fast.headers["content-type"] == slow.headers["content-type"]
                assert fast.headers.get("location") == slow.headers.get("location")
                assert "x-request-id" in fast.headers

    assert any(layer.cls is FastRoutes for layer in sale.app.user_middleware)
    token = alice["Authorization"].removeprefix("Bearer ")
    principal = await sale.app.state.keys.principal(token, sale.clock())
    path = f"/events/{event['id']}/queue"
    joined = await through_fast_path(
        sale.app, FAST_JOIN, path, b"{}", b"application/json", principal
    )
    assert joined.sent[0]["status"] == 201
    assert json.loads(joined.sent[1]["body"])["ticket"]
    assert joined.scope["route"].path == "/events/{event_id}/queue"  # counted as the route
    assert joined.reached == []
    text = await through_fast_path(sale.app, FAST_JOIN, path, b"alice", b"text/plain", principal)
    assert text.sent == []
    assert text.reached == [b"alice"]


async def test_places_are_estimated_from_bands_counting_each_waiting_customer_once(
    sale: Sale,
) -> None:
    """The admission loop publishes who waits where: the pre-queue whole, the fifo joiners
    in at most FIFO_BUCKETS buckets, without overlap, each waiting customer once; the
    last of the line is told a place behind everyone."""
    event = await sale.event(capacity=1)
    opens = sale.clock.now + timedelta(minutes=10)
    await sale.room(
        event,
        opensAt=opens.isoformat(),
        prequeueOpensAt=(opens - timedelta(minutes=5)).isoformat(),
        newUsersPerMinute=1,
        totalActiveUsers=1,
    )
    sale.clock.advance(6 * 60)
    for n in range(12):
        await sale.join(event, await sale.customer(f"early{n}"))
    sale.clock.now = opens
    last = {}
    for n in range(40):
        sale.clock.advance(0.5)
        last = await sale.join(event, await sale.customer(f"late{n}"))
    await sale.watch.tick()
    view = sale.watch.view(event["id"])
    assert view is not None
    assert view.room.published is not None
    bands = view.snapshot.bands
    assert len(bands) <= 2 + FIFO_BUCKETS
    assert all(a.top <= b.low for a, b in itertools.pairwise(bands))
    waiting = view.room.published.waiting
    assert waiting == 12 + 40 - 1  # one let in
    assert sum(band.waiting for band in bands) == waiting
    assert (await sale.poll(last["ticket"])).json()["position"] == waiting


async def test_a_shopper_refused_for_want_of_seats_no_longer_holds_up_the_line(
    sale: Sale,
) -> None:
    """Seats a shopper is likely to take are counted until it has tried to buy: one
    refused (it asked for more than is left) is done trying, and the next are let in
    at the next turn, not when its session ends."""
    event = await sale.event(capacity=3, maxPerCustomer=3)
    await sale.room(event, newUsersPerMinute=100, totalActiveUsers=100)
    names = ("a", "b")
    keys = {name: await sale.customer(name) for name in names}
    tickets = {name: (await sale.join(event, keys[name]))["ticket"] for name in names}
    await sale.watch.tick()
    assert (await sale.poll(tickets["b"])).json()["status"] == "waiting"
    token = (await sale.poll(tickets["a"])).json()["admissionToken"]
    assert (await sale.book(event, keys["a"], token, qty=1)).status_code == 201
    await sale.watch.tick()  # 2 seats left, and nobody else shopping
    assert (await sale.poll(tickets["b"])).json()["status"] == "admitted"
    # c comes; b wants 3 of the 2 left and is refused: it has tried, c is let in.
    keys["c"] = await sale.customer("c")
    tickets["c"] = (await sale.join(event, keys["c"]))["ticket"]
    await sale.watch.tick()
    assert (await sale.poll(tickets["c"])).json()["status"] == "waiting"
    token = (await sale.poll(tickets["b"])).json()["admissionToken"]
    assert_problem(await sale.book(event, keys["b"], token, qty=3), 400, "insufficient_seats")
    await sale.watch.tick()
    assert (await sale.poll(tickets["c"])).json()["status"] == "admitted"


async def test_a_join_whose_client_left_mid_body_is_the_routes_to_answer(sale: Sale) -> None:
    """The fast path answers nothing itself for a client gone before its body: the route
    gets the disconnect, replayed, and answers it as it always did (not a silent 500)."""
    event = await sale.event()
    await sale.room(event)
    token = (await sale.customer("alice"))["Authorization"].removeprefix("Bearer ")
    principal = await sale.app.state.keys.principal(token, sale.clock())
    got: list[str] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        got.append((await receive())["type"])

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/events/{event['id']}/queue",
        "headers": [(b"content-type", b"application/json")],
        "app": sale.app,
        PRINCIPAL: principal,
    }
    await FastRoutes(route, [FAST_JOIN])(scope, gone, send)
    assert got == ["http.disconnect"]
    assert sent == []


async def test_forged_tickets_are_counted_as_guesses_and_limited_by_address(
    settings: Settings, database: Database
) -> None:
    """A ticket this service did not sign is a guessed credential: 404 until the address
    has used up its failed-authentication quota, then 429, while a real ticket polled
    from that same address is still answered."""
    async with open_sale(
        settings, database, rate_limits_enabled=True, rate_limit_auth_failures=Quota(3, 600)
    ) as sale:
        event = await sale.event()
        await sale.room(event)
        ticket = (await sale.join(event, await sale.customer("alice")))["ticket"]
        forged = ticket[:-4] + ("AAAA" if not ticket.endswith("AAAA") else "BBBB")
        answers = [await sale.http.get(f"/queue/{forged}{n}") for n in range(6)]
        for answer in answers[:3]:
            assert_problem(answer, 404, "queue_ticket_invalid")
        for answer in answers[3:]:
            assert_problem(answer, 429, "rate_limited")
            assert int(answer.headers["retry-after"]) >= 1
        assert (await sale.poll(ticket)).status_code == 200
