"""Customers going through an event's waiting room, as real concurrent HTTP clients.

Each customer joins the line, polls its ticket no sooner than it is told,
and once admitted books a random quantity with its admission token (what is
left, if fewer seats remain than it wanted). It stops when it has bought, or
the answer is `sold_out` or `expired`. Everything each one saw is kept, for
the checks and the fairness figures (`domain/fairness.py`).

Used by the concurrency test (tests/e2e/test_waiting_room_sale.py) with open
access, where a customer's id travels in the body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from boxoffice.domain.fairness import Inversion, largest_inversion, position_success_correlation

POOL_SIZE = 20  # connections per HTTP client


@dataclass
class Customer:
    name: str
    wants: int
    order_key: int = -1
    admitted_at: datetime | None = None
    bought: int = 0
    final: str = ""  # bought, sold_out, expired, no_seats
    waiting_seen_at: list[float] = field(default_factory=list)  # monotonic times of "waiting"
    sold_out_seen_at: float | None = None
    polls: int = 0
    longest_told: int = 0  # the longest pollAfterSeconds it was told while waiting


@dataclass
class SaleResult:
    customers: list[Customer]
    statuses: Counter[int]
    last_sale_at: float | None  # monotonic: when the last purchase was answered

    def in_line_order(self) -> list[Customer]:
        return sorted(self.customers, key=lambda customer: customer.order_key)

    @property
    def correlation(self) -> float | None:
        line = self.in_line_order()
        return position_success_correlation(
            list(range(1, len(line) + 1)), [customer.bought > 0 for customer in line]
        )

    @property
    def ideal_correlation(self) -> float | None:
        """The correlation had exactly the first places bought: the best a line can do with
        this many buyers (Spearman against a yes/no is bounded by how many said yes)."""
        buyers = sum(customer.bought > 0 for customer in self.customers)
        everyone = len(self.customers)
        return position_success_correlation(
            list(range(1, everyone + 1)), [place < buyers for place in range(everyone)]
        )

    @property
    def inversion(self) -> Inversion:
        return largest_inversion([customer.admitted_at for customer in self.in_line_order()])


def order_key_of(ticket: str) -> int:
    """The order key inside a `wq1.` ticket (its layout: event, key, issued at, ...); the
    signature is not checked here, the server does that."""
    packed = ticket.removeprefix("wq1.")
    payload = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
    key: int = struct.unpack_from(">Q", payload, 16)[0]
    return key


async def run_sale(
    urls: list[str],
    event_id: str,
    section_id: str,
    *,
    customers: int,
    session_seconds: int,
    max_qty: int = 4,
    connections: int = 200,
    seed: int = 7,
) -> SaleResult:
    """Every customer at once through the line to `section_id`'s seats."""
    draw = random.Random(seed)
    crowd = [Customer(f"c{index:06d}", draw.randint(1, max_qty)) for index in range(customers)]
    statuses: Counter[int] = Counter()
    sales: list[float] = []
    # Idle connections are dropped before the server's keep-alive timeout (5 s) closes them,
    # so a request never goes out on a connection the server is closing.
    limits = httpx.Limits(
        max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE, keepalive_expiry=2
    )
    async with contextlib.AsyncExitStack() as stack:
        # Several small pools, not one of `connections`: httpcore's pool scans every
        # connection for every queued request, so one pool of 200 spent most of this
        # client's CPU (as much as the server's) finding a free connection.
        pools = [
            (
                await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=60)),
                # Never more requests at once than connections: httpx's pool, oversubscribed by
                # thousands of waiting requests, stalled until they timed out (httpcore 1.0.9).
                asyncio.Semaphore(POOL_SIZE),
            )
            for _ in range(max(1, connections // POOL_SIZE))
        ]

        async def request(index: int, method: str, url: str, **kwargs: object) -> httpx.Response:
            client, slots = pools[index % len(pools)]
            async with slots:
                response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
            statuses[response.status_code] += 1
            return response

        async def shop(index: int, customer: Customer) -> None:
            base = urls[index % len(urls)]
            joined = await request(
                index, "POST", f"{base}/events/{event_id}/queue", json={"customerId": customer.name}
            )
            assert joined.status_code == 201, joined.text
            answer = joined.json()
            ticket = answer["ticket"]
            customer.order_key = order_key_of(ticket)
            while True:
                status = answer["status"]
                if status == "admitted":
                    until = datetime.fromisoformat(answer["admittedUntil"])
                    customer.admitted_at = until - timedelta(seconds=session_seconds)
                    await buy(index, base, customer, answer["admissionToken"])
                    return
                if status in ("sold_out", "expired"):
                    customer.final = status
                    if status == "sold_out":
                        customer.sold_out_seen_at = time.monotonic()
                    return
                customer.waiting_seen_at.append(time.monotonic())
                customer.longest_told = max(customer.longest_told, answer["pollAfterSeconds"])
                await asyncio.sleep(answer["pollAfterSeconds"])
                polled = await request(index, "GET", f"{base}/queue/{ticket}")
                customer.polls += 1
                assert polled.status_code == 200, polled.text
                answer = polled.json()

        async def buy(index: int, base: str, customer: Customer, token: str) -> None:
            qty = customer.wants
            while qty > 0:
                booked = await request(
                    index,
                    "POST",
                    f"{base}/book",
                    json={
                        "eventId": event_id,
                        "sectionId": section_id,
                        "qty": qty,
                        "customerId": customer.name,
                    },
                    headers={"Admission-Token": token},
                )
                if booked.status_code == 201:
                    sales.append(time.monotonic())
                    customer.bought = qty
                    customer.final = "bought"
                    return
                problem = booked.json()
                assert problem["code"] == "insufficient_seats", booked.text
                if problem["remaining"] == 0:
                    break
                qty = problem["remaining"]  # take what is left
            customer.final = "no_seats"

        await asyncio.gather(*(shop(index, customer) for index, customer in enumerate(crowd)))
    return SaleResult(crowd, statuses, max(sales) if sales else None)
