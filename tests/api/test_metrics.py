"""GET /metrics after a sale: every metric the service promises, counting what happened
(by route template, never a raw path), on both databases and both booking paths."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.db.tables import bookings
from boxoffice.services.clock import FakeClock
from boxoffice.services.rate_limits import Quota
from boxoffice.services.unit_of_work import UnitOfWork
from tests.api.conftest import EVENT, assert_problem
from tests.support.keys import bearer

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Every metric the service exports, by the name its samples carry.
EXPORTED = {
    "boxoffice_http_request_duration_seconds_bucket",
    "boxoffice_http_request_duration_seconds_count",
    "boxoffice_http_request_duration_seconds_sum",
    "boxoffice_refusals_total",
    "boxoffice_bookings_total",
    "boxoffice_tickets_sold_total",
    "boxoffice_holds_placed_total",
    "boxoffice_holds_confirmed_total",
    "boxoffice_holds_released_total",
    "boxoffice_holds_expired_total",
    "boxoffice_bookings_cancelled_total",
    "boxoffice_batch_commands_bucket",
    "boxoffice_batch_commands_count",
    "boxoffice_batch_commit_duration_seconds_bucket",
    "boxoffice_batch_commit_duration_seconds_count",
    "boxoffice_booking_queue_wait_seconds_bucket",
    "boxoffice_booking_queue_wait_seconds_count",
    "boxoffice_booking_queue_timeouts_total",
    "boxoffice_committer_restarts_total",
    "boxoffice_database_pool_checked_out_connections",
    "boxoffice_database_pool_size_connections",
    "boxoffice_database_up",
    "boxoffice_database_server_changes_total",
    "boxoffice_section_seats",
    "boxoffice_section_capacity_seats",
    "boxoffice_inventory_violations",
    "boxoffice_inventory_checked_timestamp_seconds",
    "boxoffice_rate_limited_requests_total",
    "boxoffice_rate_limit_fallbacks_total",
    "boxoffice_rate_limits_shared",
    "boxoffice_availability_cache_lookups_total",
    "boxoffice_availability_cache_refreshes_total",
}  # and boxoffice_fraud_flags_total{rule}, from the first flag (tests/api/test_flags.py)


@asynccontextmanager
async def serving(
    settings: Settings, database: Database, clock: FakeClock, **changes: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (no sweeper, no sampling task: the test runs both) and a client without a key."""
    quiet = settings.model_copy(
        update={"hold_sweep_interval_seconds": 0, "metrics_sample_seconds": 0, **changes}
    )
    app = create_app(quiet, database, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield app, http


async def check_now(app: FastAPI) -> None:
    """What the sampler does every few seconds: probe the database, check the sections."""
    await app.state.exporter.probe()
    await app.state.exporter.look(check=True)


async def scrape(http: httpx.AsyncClient, admin: dict[str, str]) -> Series:
    answer = await http.get("/metrics", headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Sale:
    """What `sell` did, and the scrapes before and after."""

    event: dict[str, Any]
    paid_hold: str
    before: Series
    after: Series


async def sell(settings: Settings, database: Database) -> Sale:
    """A sale with one of everything: bookings, holds confirmed, released and expired, a
    cancellation, refusals for want of seats, of a key, of a route and of a rate limit."""
    admin = await bearer(database)
    clock = FakeClock()
    async with serving(
        settings,
        database,
        clock,
        rate_limits_enabled=True,
        rate_limit_keys=Quota(1, 60),
        rate_limit_staff_factor=1,
    ) as (app, http):
        before = await scrape(http, admin)
        made = await http.post("/events", json=EVENT, headers=admin)
        event = made.json()
        vip, ga = (section["id"] for section in event["sections"])  # 5 and 100 seats
        for _ in range(2):  # read, then answered from the availability cache
            assert (await http.get(f"/events/{event['id']}")).status_code == 200

        def book(section: str, qty: int) -> dict[str, Any]:
            return {"eventId": event["id"], "sectionId": section, "qty": qty}

        def hold(section: str, qty: int) -> dict[str, Any]:
            items = [{"sectionId": section, "qty": qty}]
            return {"eventId": event["id"], "items": items, "ttlSeconds": 60}

        booked = await http.post("/book", json=book(ga, 2), headers=admin)
        assert booked.status_code == 201
        assert_problem(
            await http.post("/book", json=book(vip, 6), headers=admin), 400, "insufficient_seats"
        )
        paid = (await http.post("/holds", json=hold(vip, 2), headers=admin)).json()["id"]
        confirmed = await http.post(f"/holds/{paid}/confirm", json={}, headers=admin)
        assert confirmed.status_code == 201
        given_up = (await http.post("/holds", json=hold(ga, 1), headers=admin)).json()["id"]
        assert (await http.delete(f"/holds/{given_up}", headers=admin)).status_code == 204
        assert (await http.post("/holds", json=hold(ga, 3), headers=admin)).status_code == 201
        clock.advance(61)
        assert await app.state.sweeper.sweep() == 3
        cancel = f"/bookings/{booked.json()['id']}/cancel"
        assert (await http.post(cancel, headers=admin)).status_code == 200
        assert_problem(await http.get("/no/such/page", headers=admin), 404, "not_found")
        assert_problem(await http.post("/book", json=book(ga, 1)), 401, "unauthorized")
        assert (await http.get("/keys", headers=admin)).status_code == 200
        assert_problem(await http.get("/keys", headers=admin), 429, "rate_limited")
        await check_now(app)
        after = await scrape(http, admin)
    return Sale(event, paid, before, after)


@pytest.mark.parametrize("booking_strategy", ["direct", "batched"])
async def test_every_metric_counts_a_sale(
    settings: Settings, database: Database, booking_strategy: str
) -> None:
    sale = await sell(settings, database)
    before, after, event, paid = sale.before, sale.after, sale.event, sale.paid_hold
    vip, ga = (section["id"] for section in event["sections"])
    missing = EXPORTED - {name for name, _ in after}
    assert not missing, f"not exported: {sorted(missing)}"

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("boxoffice_bookings_total") == 2  # booked, and the confirmed hold's item
    assert grew("boxoffice_tickets_sold_total") == 4
    assert grew("boxoffice_holds_placed_total") == 3
    assert grew("boxoffice_holds_confirmed_total") == 1
    assert grew("boxoffice_holds_released_total") == 1
    assert grew("boxoffice_holds_expired_total") == 1
    assert grew("boxoffice_bookings_cancelled_total") == 1
    assert grew("boxoffice_availability_cache_lookups_total", result="miss") == 1
    assert grew("boxoffice_availability_cache_lookups_total", result="hit") == 1
    assert grew("boxoffice_availability_cache_refreshes_total") == 1
    for code in ("insufficient_seats", "not_found", "unauthorized", "rate_limited"):
        assert grew("boxoffice_refusals_total", code=code) == 1, code
    assert grew("boxoffice_rate_limited_requests_total", route_class="keys") == 1
    # Eight commands one after the other: eight batches of one (the sweeper has its own).
    batches = 8 if booking_strategy == "batched" else 0
    assert grew("boxoffice_batch_commands_count") == batches
    assert grew("boxoffice_batch_commands_bucket", le="1.0") == batches
    assert grew("boxoffice_batch_commit_duration_seconds_count") == batches
    assert grew("boxoffice_booking_queue_wait_seconds_count") == batches  # batches of one

    def answered(route: str, method: str, status: int) -> float:
        name = "boxoffice_http_request_duration_seconds_count"
        return grew(name, route=route, method=method, status=str(status))

    # Route templates, never raw paths: a hold's id is not a label, an unknown path is one.
    assert answered("/holds/{hold_id}/confirm", "POST", 201) == 1
    assert answered("/book", "POST", 201) == 1
    assert answered("/book", "POST", 400) == 1
    assert answered("/book", "POST", 401) == 1  # refused before any routing
    assert answered("unmatched", "GET", 404) == 1
    routes = {dict(labels)["route"] for _, labels in after if "route" in dict(labels)}
    assert not [route for route in routes if paid in route or route == "/no/such/page"]

    # The inventory as read at the last look, and nothing wrong with it.
    def seats(section: str, state: str) -> float:
        name = next(s["name"] for s in event["sections"] if s["id"] == section)
        return value(
            after,
            "boxoffice_section_seats",
            event_id=event["id"],
            section_id=section,
            section=name,
            state=state,
        )

    assert [seats(vip, state) for state in ("remaining", "held", "sold")] == [3, 0, 2]
    assert [seats(ga, state) for state in ("remaining", "held", "sold")] == [100, 0, 0]
    assert value(after, "boxoffice_inventory_violations") == 0
    assert value(after, "boxoffice_database_up") == 1
    pools = {
        dict(labels)["pool"] for name, labels in after if name.startswith("boxoffice_database_pool")
    }
    # (In one process the registry also keeps the pools of apps that ran before this one.)
    assert pools >= ({"shared"} if database.dialect == "sqlite" else {"readers", "writers"})


async def test_a_section_whose_seats_disagree_with_its_bookings_is_a_violation(
    settings: Settings, database: Database
) -> None:
    admin = await bearer(database)
    clock = FakeClock()
    async with serving(settings, database, clock, metrics_inventory_sections=1) as (app, http):
        older = (await http.post("/events", json=EVENT, headers=admin)).json()
        clock.advance(1)
        newer = (await http.post("/events", json=EVENT, headers=admin)).json()
        section = newer["sections"][0]["id"]
        booked = await http.post(
            "/book", json={"eventId": newer["id"], "sectionId": section, "qty": 2}, headers=admin
        )
        assert booked.status_code == 201
        await check_now(app)
        clean = await scrape(http, admin)
        # A booking lost behind the service's back: its seats are sold to no one.
        async with UnitOfWork(database, write=True) as uow:
            lost = uuid.UUID(booked.json()["id"])
            await uow.conn.execute(delete(bookings).where(bookings.c.id == lost))
            await uow.commit()
        await check_now(app)
        broken = await scrape(http, admin)

    assert value(clean, "boxoffice_inventory_violations") == 0
    assert value(broken, "boxoffice_inventory_violations") == 1
    watched = {
        dict(labels)["section_id"] for name, labels in broken if name == "boxoffice_section_seats"
    }
    # One section watched: the newest event's first; nothing of the older event.
    assert section in watched
    assert not watched & {s["id"] for s in older["sections"]}


ROOT = Path(__file__).parents[2]
# Prometheus makes this one itself, for every scrape target.
MADE_BY_PROMETHEUS = {"up"}
# Counted on PostgreSQL only (SQLite's batches have one path): the PostgreSQL run of the
# test below proves they are exported.
POSTGRESQL_ONLY = {"boxoffice_batch_paths_total"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or keywords)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings: label values, regexes
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\w+", " ", expr)  # Grafana's variables
    names = set()
    for found in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        follows = expr[found.end() :].lstrip()
        if not follows.startswith("(") and found.group().lower() not in _KEYWORDS:
            names.add(found.group())
    return names


def monitoring_queries() -> dict[str, str]:
    """Every PromQL query of the alert rules and the dashboard, by where it is."""
    queries = {}
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            queries[f"alerts.yml: {rule['alert']}"] = rule["expr"]
    dashboard = json.loads((ROOT / "deploy/grafana/boxoffice.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries[f"boxoffice.json: {panel['title']} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert found, variable["definition"]
            queries[f"boxoffice.json: ${variable['name']}"] = found.group(1)
    return queries


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"/b|/c"}[5m]))) > 1e3'
        " or min by (x) (b_total offset 5m) != on (x) group_left c"
        ' or time() - max(d{e="f"}) > $threshold and up{job="boxoffice"} == bool 0'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d", "up"}


async def test_the_alerts_and_the_dashboard_name_only_metrics_the_service_exports(
    settings: Settings, database: Database
) -> None:
    sale = await sell(settings, database)
    exported = {name for name, _ in sale.after} | MADE_BY_PROMETHEUS
    if database.dialect == "sqlite":
        exported |= POSTGRESQL_ONLY
    queries = monitoring_queries()
    assert len(queries) > 30
    unknown = {
        where: sorted(metric_names(expr) - exported)
        for where, expr in queries.items()
        if metric_names(expr) - exported
    }
    assert not unknown, unknown
    assert all(metric_names(expr) for expr in queries.values())
