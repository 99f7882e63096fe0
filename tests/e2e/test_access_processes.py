"""Access control on real server processes (two workers), keys on, on both databases:
each worker keeps its own key cache, so a revocation must reach the other one too."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.keys import first_admin_key
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

CACHE_SECONDS = 1.0


def test_keys_roles_and_a_revocation_across_two_workers(database_url: str, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {first_admin_key(database_url)}"}
    env = {"BOXOFFICE_OPEN_ACCESS": "false", "KEY_CACHE_SECONDS": str(CACHE_SECONDS)}
    with ServerProcess(database_url, workers=2, env=env, log_dir=tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/book", json={}).status_code == 401
            organizer = http.post("/keys", json={"role": "organizer"}, headers=admin).json()
            alice = http.post(
                "/keys", json={"role": "customer", "customerId": "alice"}, headers=admin
            ).json()
            bob = http.post(
                "/keys", json={"role": "customer", "customerId": "bob"}, headers=admin
            ).json()
            as_organizer = {"Authorization": f"Bearer {organizer['key']}"}
            as_alice = {"Authorization": f"Bearer {alice['key']}"}
            as_bob = {"Authorization": f"Bearer {bob['key']}"}
            event = http.post(
                "/events",
                json={"name": "Gig", "sections": [{"name": "GA", "price": 5, "capacity": 10}]},
                headers=as_organizer,
            ).json()
            booked = http.post(
                "/book",
                json={"eventId": event["id"], "sectionId": event["sections"][0]["id"], "qty": 1},
                headers=as_alice,
            )
            assert booked.status_code == 201
            path = f"/bookings/{booked.json()['id']}"
            # Many requests, so both workers answer some: each one says the same.
            assert {http.get(path, headers=as_alice).status_code for _ in range(20)} == {200}
            assert {http.get(path, headers=as_bob).status_code for _ in range(20)} == {404}

            assert http.delete(f"/keys/{alice['id']}", headers=admin).status_code == 204
            time.sleep(CACHE_SECONDS + 0.5)
            assert {http.get(path, headers=as_alice).status_code for _ in range(20)} == {401}
            assert {http.get(path, headers=as_organizer).status_code for _ in range(20)} == {200}
        log = server.log()
    assert alice["key"] not in log
    assert organizer["key"] not in log
