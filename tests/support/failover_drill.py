"""A failover under load, and what it leaves behind: the test and `make failover-demo` run this.

1. Boxoffice (`boxoffice serve --workers 2`) on a pg_auto_failover formation,
   through one URL naming both nodes with `target_session_attrs=read-write`.
2. Clients book, hold and confirm, each request under an Idempotency-Key, and
   retry every failure with the same key (`RetryingClients`).
3. Mid-load, kill -9 of the primary's postmaster and of its pg_autoctl keeper at
   once, so that nothing on that node restarts it: the node is lost, and the
   monitor promotes the synchronous secondary. (Or of the postmaster alone: see
   `Fault`.)
4. Once clients have succeeded again for a while, they stop; then, on the
   primary pg_auto_failover settles on: every acknowledged booking and hold
   is stored, nothing is stored that no client was answered (a retry that
   booked twice would be), and `boxoffice check` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from boxoffice.db.migrate import upgrade
from tests.support.auto_failover import AutoFailoverFormation, Node
from tests.support.retrying_clients import Outage, RetryingClients
from tests.support.server import ServerProcess, inventory_check

# "node": kill -9 of the primary's postmaster and keeper at once: the node is lost, and
# the monitor promotes the secondary once it has seen it dead. "postmaster": kill -9 of
# the postmaster alone; its keeper restarts it within a second, and the monitor fails
# over only if the keeper reported it down first (either may happen). "secondary": the
# secondary's node is lost; the primary's commits wait for it until the monitor gives up
# on it and turns synchronous replication off.
Fault = Literal["node", "postmaster", "secondary"]

CAPACITY_PER_SECTION = 100_000
SECTIONS = 4

# Detection in a few seconds instead of pg_auto_failover's defaults (a node is
# unhealthy after 20 s without a report, and a primary that cannot be told to
# demote is waited for 30 s): for tests, where the node is known to be dead.
FAST_DETECTION = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "3000",
    "pgautofailover.primary_demote_timeout": "3000",
}


@dataclass
class DrillReport:
    """What happened, what clients saw, and what the new primary holds."""

    old_primary: str
    new_primary: str
    sync_standby_names_before: str  # on the old primary, before the fault
    fault: Fault
    promoted_after: float | None  # seconds from the fault to the monitor showing another primary
    outage: Outage
    intents: int
    attempts: int
    failures: list[str]  # requests that got no answer, or a refusal: must be empty
    acknowledged_bookings: set[str]
    acknowledged_holds: dict[str, str]  # hold id -> status last answered
    stored_bookings: set[str]  # every booking on the new primary
    stored_holds: dict[str, str]  # hold id -> status on the new primary
    check_returncode: int
    check_output: str
    server_log: str  # what `boxoffice serve` logged (warnings and errors)

    @property
    def lost_bookings(self) -> set[str]:
        return self.acknowledged_bookings - self.stored_bookings

    @property
    def unanswered_bookings(self) -> set[str]:
        """Stored, but no client was told: what a retry that booked twice would leave."""
        return self.stored_bookings - self.acknowledged_bookings

    @property
    def lost_holds(self) -> set[str]:
        return set(self.acknowledged_holds) - set(self.stored_holds)

    @property
    def holds_unlike_answered(self) -> dict[str, tuple[str, str]]:
        """Holds whose stored status is not the one last answered (confirmed stays confirmed)."""
        return {
            hold_id: (answered, self.stored_holds.get(hold_id, "missing"))
            for hold_id, answered in self.acknowledged_holds.items()
            if answered == "confirmed" and self.stored_holds.get(hold_id) != "confirmed"
        }


async def failover_drill(
    formation: AutoFailoverFormation,
    *,
    log_dir: Path,
    warmup_seconds: float = 3.0,
    load_after_recovery_seconds: float = 3.0,
    bookers: int = 8,
    checkouts: int = 4,
    promotion_timeout: float = 150.0,
    fault: Fault = "node",
) -> DrillReport:
    url = formation.url()
    # Migrations, the server and the inventory check all go through the multi-host URL.
    await asyncio.to_thread(upgrade, url)
    old = formation.primary()
    sync_names = formation.synchronous_standby_names(old)
    with ServerProcess(url, workers=2, log_dir=log_dir) as server:
        event_id, section_ids = await _create_event(server.url)
        clients = RetryingClients(
            server.url,
            event_id,
            section_ids,
            bookers=bookers,
            checkouts=checkouts,
            deadline_seconds=promotion_timeout + 30,
        )
        stop = asyncio.Event()
        load = asyncio.create_task(clients.run(stop))
        watched = asyncio.Event()
        try:
            await _until(lambda: clients.successes() >= 20, warmup_seconds + 60, "first bookings")
            await asyncio.sleep(warmup_seconds)
            fault_at = time.monotonic()
            if fault == "node":
                formation.kill_node(old)
            elif fault == "postmaster":
                formation.kill_postmaster(old)
            else:
                formation.kill_node(next(node for node in formation.nodes if node is not old))
            promotion = asyncio.create_task(_promotion(formation, old, fault_at, watched))
            try:
                await _until(
                    lambda: any(a.succeeded and a.sent > fault_at for a in clients.attempts),
                    promotion_timeout,
                    "a success after the fault",
                )
            except TimeoutError as error:
                raise TimeoutError(f"{error}\n{_diagnosis(formation, server, clients)}") from None
            await asyncio.sleep(load_after_recovery_seconds)
        except BaseException:
            load.cancel()  # its requests' deadlines are minutes away
            raise
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await load
    # Whatever pg_auto_failover decided, let it finish before reading the result.
    new = await asyncio.to_thread(formation.wait_until_settled, promotion_timeout)
    watched.set()
    promoted_after = await promotion

    stored_bookings = set(formation.node_sql(new, "SELECT id FROM bookings").split())
    stored_holds = dict(
        row.split("|") for row in formation.node_sql(new, "SELECT id, status FROM holds").split()
    )
    check = await asyncio.to_thread(inventory_check, formation.node_url(new))
    return DrillReport(
        old_primary=old.name,
        new_primary=new.name,
        sync_standby_names_before=sync_names,
        fault=fault,
        promoted_after=promoted_after,
        outage=Outage.of(clients.attempts, fault_at),
        intents=clients.intents,
        attempts=len(clients.attempts),
        failures=clients.failures,
        acknowledged_bookings=set(clients.acknowledged.bookings),
        acknowledged_holds=clients.acknowledged.holds,
        stored_bookings=stored_bookings,
        stored_holds=stored_holds,
        check_returncode=check.returncode,
        check_output=check.stdout + check.stderr,
        server_log=server.log(),
    )


def _diagnosis(
    formation: AutoFailoverFormation, server: ServerProcess, clients: RetryingClients
) -> str:
    """What a drill that did not recover leaves to read: states, answers, logs."""
    try:
        states: object = formation.states()
    except subprocess.CalledProcessError as error:
        states = error.stderr
    recent = Counter(attempt.outcome for attempt in clients.attempts[-100:])
    logs = "".join(
        f"\n--- {member.name}\n{formation.log(member)[-4000:]}"
        for member in [*formation.nodes, formation.monitor]
    )
    return f"states {states}; last answers {dict(recent)}\n--- server\n{server.log()[-4000:]}{logs}"


async def _promotion(
    formation: AutoFailoverFormation, old: Node, fault_at: float, watched: asyncio.Event
) -> float | None:
    """Seconds from the fault until the monitor shows a node other than `old` taking
    writes; None if that had not happened when `watched` was set."""
    while not watched.is_set():
        with contextlib.suppress(subprocess.CalledProcessError):
            states = await asyncio.to_thread(formation.states)
            if formation.writable(states) not in (None, old):
                return time.monotonic() - fault_at
        await asyncio.sleep(0.1)
    return None


async def _create_event(base_url: str) -> tuple[str, list[str]]:
    sections = [
        {"name": f"S{index}", "price": 10, "capacity": CAPACITY_PER_SECTION}
        for index in range(SECTIONS)
    ]
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post(
            "/events/create", json={"name": "Failover", "sections": sections}
        )
        response.raise_for_status()
        event = response.json()
    return event["id"], [section["id"] for section in event["sections"]]


async def _until(condition: Callable[[], bool], within_seconds: float, what: str) -> None:
    deadline = time.monotonic() + within_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within_seconds:.0f} s for {what}")
        await asyncio.sleep(0.05)
