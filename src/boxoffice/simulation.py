"""The original concurrency script, kept as a check anyone can run against a live server.

It creates events, fires concurrent booking requests at them, and then checks
the core promise from the outside, through the public API only:

* no section has negative `remaining` (no oversell);
* seats taken (`capacity - remaining`) equal the seats of the 201 answers, and
  equal the bookings that `GET /bookings` lists (no leaked or lost seat);
* every 400 `insufficient_seats` was justified: seats only ever go down here,
  so the section's final `remaining` must be below the rejected `qty`;
* nothing else failed (no 5xx, no network error).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

SectionKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class SimulationPlan:
    requests: int = 20
    capacity: int = 5
    concurrency: int = 20
    qty_min: int = 1
    qty_max: int = 1
    events: int = 1
    sections: int = 1
    seed: int | None = None


@dataclass(slots=True)
class Outcomes:
    booked: dict[SectionKey, int] = field(default_factory=lambda: defaultdict(int))
    booking_ids: dict[SectionKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    rejected: dict[SectionKey, list[int]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def successful(self) -> int:
        return sum(len(ids) for ids in self.booking_ids.values())

    @property
    def failed(self) -> int:
        return sum(len(r) for r in self.rejected.values()) + sum(self.errors.values())


async def run_simulation(
    url: str,
    plan: SimulationPlan,
    console: Console,
    *,
    show_progress: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    api_key: str | None = None,
) -> bool:
    """Run `plan` against the server at `url`; print the report; True when it passed.

    `transport` replaces the network, so the checks themselves can be tested
    against a deliberately broken fake server. `api_key` (an organizer's or an
    admin's) creates the events, books in them and reads their bookings back.
    """
    rng = random.Random(plan.seed)
    limits = httpx.Limits(
        max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency
    )
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=60.0, transport=transport, headers=headers
    ) as client:
        try:
            health = await client.get("/healthz")
        except httpx.HTTPError as error:
            console.print(f"[red]Cannot reach the server at {url}: {error}[/red]")
            return False
        if health.status_code == 401:  # a key that is sent must be valid, even there
            _refused(console, 401, api_key)
            return False
        if health.status_code != 200:
            console.print(f"[red]The server at {url} is not healthy: {health.status_code}[/red]")
            return False
        try:
            capacities = await _create_events(client, plan)
        except httpx.HTTPStatusError as error:
            status = error.response.status_code
            if status not in (401, 403):
                raise
            _refused(console, status, api_key)
            return False
        targets = list(capacities)
        jobs = [
            (rng.choice(targets), rng.randint(plan.qty_min, plan.qty_max))
            for _ in range(plan.requests)
        ]
        outcomes = Outcomes()
        await _fire(client, jobs, plan.concurrency, outcomes, show_progress, console)
        remaining = await _remaining(client, capacities)
        listed = await _listed_bookings(client, {event for event, _ in capacities})
    problems = _check(capacities, remaining, listed, outcomes)
    _report(console, plan, capacities, remaining, outcomes, problems)
    return not problems


def _refused(console: Console, status: int, api_key: str | None) -> None:
    if status == 403:
        said = "it needs an organizer's or an admin's key"
    elif api_key:
        said = "the key given is not valid (revoked, expired or mistyped)"
    else:
        said = "it needs a key"
    console.print(
        f"[red]The server refused the simulation ({status}): {said}. "
        "Pass one with --key or BOXOFFICE_API_KEY.[/red]"
    )


async def _create_events(client: httpx.AsyncClient, plan: SimulationPlan) -> dict[SectionKey, int]:
    capacities: dict[SectionKey, int] = {}
    for number in range(plan.events):
        body = {
            "name": f"Simulation event {number + 1}",
            "sections": [
                {"name": f"Section {s + 1}", "price": 10, "capacity": plan.capacity}
                for s in range(plan.sections)
            ],
        }
        response = await client.post("/events/create", json=body)
        response.raise_for_status()
        event = response.json()
        for section in event["sections"]:
            capacities[(event["id"], section["id"])] = section["capacity"]
    return capacities


async def _fire(
    client: httpx.AsyncClient,
    jobs: list[tuple[SectionKey, int]],
    concurrency: int,
    outcomes: Outcomes,
    show_progress: bool,
    console: Console,
) -> None:
    gate = asyncio.Semaphore(concurrency)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
        transient=True,
    ) as progress:
        task = progress.add_task("Booking", total=len(jobs))

        async def one(key: SectionKey, qty: int) -> None:
            async with gate:
                await _book(client, key, qty, outcomes)
            progress.advance(task)

        await asyncio.gather(*(one(key, qty) for key, qty in jobs))


async def _book(client: httpx.AsyncClient, key: SectionKey, qty: int, outcomes: Outcomes) -> None:
    event_id, section_id = key
    try:
        response = await client.post(
            "/book", json={"eventId": event_id, "sectionId": section_id, "qty": qty}
        )
    except httpx.HTTPError as error:
        outcomes.errors[type(error).__name__] += 1
        return
    if response.status_code == 201:
        outcomes.booked[key] += qty
        outcomes.booking_ids[key].add(response.json()["id"])
    elif response.status_code == 400 and _code(response) == "insufficient_seats":
        outcomes.rejected[key].append(qty)
    else:
        outcomes.errors[f"HTTP {response.status_code} {_code(response) or ''}".strip()] += 1


def _code(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


async def _remaining(
    client: httpx.AsyncClient, capacities: dict[SectionKey, int]
) -> dict[SectionKey, int]:
    remaining: dict[SectionKey, int] = {}
    for event_id in {event for event, _ in capacities}:
        response = await client.get(f"/events/{event_id}")
        response.raise_for_status()
        for section in response.json()["sections"]:
            remaining[(event_id, section["id"])] = section["remaining"]
    return remaining


async def _listed_bookings(
    client: httpx.AsyncClient, event_ids: set[str]
) -> dict[SectionKey, dict[str, int]]:
    """Every booking the API lists for these events, following the `Link` pages."""
    listed: dict[SectionKey, dict[str, int]] = defaultdict(dict)
    for event_id in event_ids:
        next_url: str | None = f"/bookings?eventId={event_id}&limit=1000"
        while next_url:
            response = await client.get(next_url)
            response.raise_for_status()
            for booking in response.json():
                listed[(booking["eventId"], booking["sectionId"])][booking["id"]] = booking["qty"]
            next_url = response.links.get("next", {}).get("url")
    return listed


def _check(
    capacities: dict[SectionKey, int],
    remaining: dict[SectionKey, int],
    listed: dict[SectionKey, dict[str, int]],
    outcomes: Outcomes,
) -> list[str]:
    problems: list[str] = []
    for key, capacity in capacities.items():
        left = remaining[key]
        taken = capacity - left
        name = f"section {key[1]}"
        if left < 0:
            problems.append(f"{name}: OVERSOLD, remaining is {left}")
        if taken != outcomes.booked[key]:
            problems.append(
                f"{name}: {taken} seats are gone but {outcomes.booked[key]} were confirmed"
            )
        listed_here = listed.get(key, {})
        if sum(listed_here.values()) != taken or set(listed_here) != outcomes.booking_ids[key]:
            problems.append(
                f"{name}: the stored bookings ({len(listed_here)}, "
                f"{sum(listed_here.values())} seats) do not match the confirmed ones"
            )
        unjustified = [qty for qty in outcomes.rejected[key] if qty <= left]
        if unjustified:
            problems.append(
                f"{name}: {len(unjustified)} requests were refused although {left} seats are left"
            )
    problems.extend(
        f"{count} requests failed with {kind}" for kind, count in outcomes.errors.items()
    )
    return problems


def _report(
    console: Console,
    plan: SimulationPlan,
    capacities: dict[SectionKey, int],
    remaining: dict[SectionKey, int],
    outcomes: Outcomes,
    problems: list[str],
) -> None:
    total_left = sum(remaining.values())
    if len(capacities) > 1:
        table = Table("section", "capacity", "booked", "remaining", "refused")
        for key, capacity in capacities.items():
            table.add_row(
                key[1][:8],
                str(capacity),
                str(outcomes.booked[key]),
                str(remaining[key]),
                str(len(outcomes.rejected[key])),
            )
        console.print(table)
    console.print(f"Total requests: {plan.requests}")
    console.print(f"Successful bookings: {outcomes.successful}")
    console.print(f"Failed bookings: {outcomes.failed}")
    console.print(f"Final remaining seats: {total_left}")
    if problems:
        for line in problems:
            console.print(f"[red]- {line}[/red]")
        console.print("[bold red]TEST FAILED[/bold red]")
    elif total_left == 0:
        console.print(
            "[bold green]TEST PASSED: Perfectly sold out without overselling.[/bold green]"
        )
    else:
        console.print(
            f"[bold green]TEST PASSED: No overselling and no leaked seats "
            f"({total_left} seats still available).[/bold green]"
        )
