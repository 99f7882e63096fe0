"""`boxoffice simulate`, the original's script, against real servers and a broken fake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from boxoffice.simulation import SimulationPlan, run_simulation
from tests.support.keys import key_by_cli
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


def simulate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The script, with no key but those in `args` (none from the caller's environment)."""
    env = {name: value for name, value in os.environ.items() if name != "BOXOFFICE_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "boxoffice", "simulate", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_original_20_clients_for_5_seats(database_url: str, tmp_path: Path) -> None:
    with ServerProcess(database_url, workers=2, log_dir=tmp_path) as server:
        run = simulate(server.url)
        many = simulate(
            server.url,
            "--requests",
            "600",
            "--capacity",
            "40",
            "--concurrency",
            "64",
            "--qty-min",
            "1",
            "--qty-max",
            "4",
            "--events",
            "2",
            "--sections",
            "3",
            "--seed",
            "1",
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Total requests: 20" in run.stdout
    assert "Successful bookings: 5" in run.stdout
    assert "Failed bookings: 15" in run.stdout
    assert "Final remaining seats: 0" in run.stdout
    assert "TEST PASSED: Perfectly sold out without overselling." in run.stdout
    assert many.returncode == 0, many.stdout + many.stderr
    assert "TEST PASSED" in many.stdout


def test_unreachable_server_fails() -> None:
    run = simulate("http://127.0.0.1:9")
    assert run.returncode == 1
    assert "Cannot reach" in run.stdout + run.stderr


class OversellingFake:
    """A deliberately broken API: it confirms every booking and never runs out."""

    def __init__(self, *, leak: bool = False) -> None:
        self.bookings: list[dict[str, Any]] = []
        self.leak = leak
        self.remaining = 5

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if path == "/events/create":
            section = {"id": "s1", "name": "S", "price": 10, "capacity": 5, "remaining": 5}
            return httpx.Response(201, json={"id": "e1", "sections": [section]})
        if path == "/book":
            self.remaining -= 1
            booking = {"id": f"b{len(self.bookings)}", "eventId": "e1", "sectionId": "s1", "qty": 1}
            self.bookings.append(booking)
            return httpx.Response(201, json=booking)
        if path == "/events/e1":
            left = 5 if self.leak else self.remaining
            return httpx.Response(200, json={"sections": [{"id": "s1", "remaining": left}]})
        if path == "/bookings":
            return httpx.Response(200, json=self.bookings)
        return httpx.Response(404)


@pytest.mark.parametrize("leak", [False, True])
async def test_simulation_catches_a_broken_server(leak: bool) -> None:
    console = Console(record=True, width=200)
    passed = await run_simulation(
        "http://fake",
        SimulationPlan(),
        console,
        transport=httpx.MockTransport(OversellingFake(leak=leak)),
    )
    assert passed is False
    text = console.export_text()
    assert "TEST FAILED" in text
    assert ("OVERSOLD" in text) != leak


def test_with_keys_on_it_takes_a_key_as_an_option_or_from_the_environment(
    database_url: str, tmp_path: Path
) -> None:
    organizer = key_by_cli(database_url, "organizer")
    env = {"BOXOFFICE_OPEN_ACCESS": "false"}
    with ServerProcess(database_url, env=env, log_dir=tmp_path) as server:
        refused = simulate(server.url)
        wrong = simulate(server.url, "--key", organizer[:-4] + "xxxx")
        by_option = simulate(server.url, "--key", organizer)
        by_environment = subprocess.run(
            [sys.executable, "-m", "boxoffice", "simulate", "--url", server.url],
            env={**os.environ, "BOXOFFICE_API_KEY": organizer},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert refused.returncode == 1
    assert "refused the simulation (401)" in refused.stdout
    assert "BOXOFFICE_API_KEY" in refused.stdout  # (rich wraps the line)
    assert "Traceback" not in refused.stdout + refused.stderr
    assert wrong.returncode == 1
    assert "the key given is not valid" in wrong.stdout
    for run in (by_option, by_environment):
        assert run.returncode == 0, run.stdout + run.stderr
        assert "TEST PASSED" in run.stdout
