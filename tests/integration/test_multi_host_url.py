"""A DATABASE_URL naming several PostgreSQL hosts: Boxoffice writes wherever writes are taken.

During a failover the hosts of such a URL are, for a moment, all unable to
take writes: the old primary is gone or demoted, the new one is still
read-only. Requests then get 503 `service_unavailable` and work again by
themselves once a host takes writes (the whole drill, with pg_auto_failover, is
tests/e2e/test_failover.py).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from boxoffice.api.app import create_app
from boxoffice.config import Settings
from tests.support.postgres import ThrowawayPostgres, free_port


def _settings(url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=url,
        boxoffice_open_access=True,
        rate_limits_enabled=False,
        _env_file=None,  # type: ignore[call-arg]
        **overrides,
    )


@asynccontextmanager
async def serving(url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never answers: to a client waiting for the
    server's first word, a dead machine whose packets are dropped looks the same."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


@pytest.fixture
def database_name(postgres: ThrowawayPostgres, postgres_template: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    return name


async def book_once(client: httpx.AsyncClient) -> httpx.Response:
    created = await client.post(
        "/events",
        json={"name": "Multi", "sections": [{"name": "GA", "price": 5, "capacity": 10}]},
    )
    assert created.status_code == 201, created.text
    event = created.json()
    return await client.post(
        "/book",
        json={"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 2},
    )


@pytest.mark.parametrize("form", ["host=a:p&host=b:q", "host=a,b&port=p,q"])
async def test_the_host_that_takes_writes_is_used_whichever_is_listed_first(
    postgres: ThrowawayPostgres, database_name: str, form: str
) -> None:
    nothing_there = free_port()  # a node that is down: connections are refused
    hosts = (
        f"host=127.0.0.1:{nothing_there}&host=127.0.0.1:{postgres.port}"
        if form == "host=a:p&host=b:q"
        else f"host=127.0.0.1,127.0.0.1&port={nothing_there},{postgres.port}"
    )
    url = f"postgresql://{postgres.user}@/{database_name}?{hosts}&target_session_attrs=read-write"
    async with serving(url) as client:
        booked = await book_once(client)
    assert booked.status_code == 201, booked.text
    assert postgres.psql("SELECT count(*) FROM bookings", database_name) == "1"


async def test_a_silent_host_costs_its_own_connect_timeout_then_the_next_is_tried(
    postgres: ThrowawayPostgres, database_name: str, silent_port: int
) -> None:
    """asyncpg gives all hosts one deadline together; each host gets its own, as in libpq."""
    url = (
        f"postgresql://{postgres.user}@/{database_name}"
        f"?host=127.0.0.1:{silent_port}&host=127.0.0.1:{postgres.port}"
        "&target_session_attrs=read-write"
    )
    async with serving(url, db_connect_timeout_seconds=1) as client:
        booked = await book_once(client)
    assert booked.status_code == 201, booked.text


async def test_no_host_taking_writes_is_503_then_service_resumes_by_itself(
    postgres: ThrowawayPostgres, database_name: str
) -> None:
    """The moment of a failover when every host is read-only answers 503, never 500."""
    url = (
        f"postgresql://{postgres.user}@/{database_name}"
        f"?host=127.0.0.1:{postgres.port}&host=127.0.0.1:{postgres.port}"
        "&target_session_attrs=read-write"
    )

    def every_session_read_only(read_only: bool) -> None:
        # As a standby (or pg_auto_failover's not-yet-confirmed new primary) is: each
        # new session reports default_transaction_read_only=on, which asyncpg checks.
        setting = "SET default_transaction_read_only = on" if read_only else "RESET ALL"
        postgres.psql(f'ALTER DATABASE "{database_name}" {setting}')
        # The kept and pooled sessions go, as they do when a primary dies.
        postgres.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database_name}' AND pid <> pg_backend_pid()"
        )

    async with serving(url) as client:
        assert (await book_once(client)).status_code == 201
        event = (await client.get("/events")).json()[0]
        booking = {"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 1}

        every_session_read_only(True)
        for _ in range(3):  # the first may meet a dropped connection; all must be 503
            refused = await client.post("/book", json=booking, headers={"Idempotency-Key": "k1"})
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["code"] == "service_unavailable"
            assert refused.headers["Retry-After"] == "1"
        assert (await client.get("/readyz")).status_code == 503

        every_session_read_only(False)
        booked = await client.post("/book", json=booking, headers={"Idempotency-Key": "k1"})
        assert booked.status_code == 201, booked.text
        again = await client.post("/book", json=booking, headers={"Idempotency-Key": "k1"})
        assert again.json()["id"] == booked.json()["id"]
    assert postgres.psql("SELECT count(*) FROM bookings", database_name) == "2"
