"""Clients that retry every failure with the same Idempotency-Key until they get an answer.

Each client does one thing after another, each under a new key: a booking
(`POST /book`), or a checkout (`POST /holds`, then `POST /holds/{id}/confirm`).
Whatever goes wrong on the way (a 503, a 409 `idempotency_in_progress`, a
dropped or refused connection, a timeout) is retried with the same key and the
same body, after `Retry-After`, until an answer comes or the deadline passes.
That is what a well-behaved client of Boxoffice does, and what makes a retry
safe: a request that was committed but never answered is answered by its retry
with the first answer, and books nothing more.

Every attempt is recorded with its times and outcome, for the figures of a
failover (`Outage`), and every acknowledged booking and hold is kept, for the
check that none was lost or doubled.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

# Answers after which a client retries with the same key.
RETRIED_STATUSES = {409, 503}
# A client never waits longer than this between two tries, whatever Retry-After says.
MAX_RETRY_WAIT_SECONDS = 1.0
RETRY_WAIT_AFTER_ERROR_SECONDS = 0.2


@dataclass(frozen=True)
class Attempt:
    """One HTTP request: when it left and came back (monotonic seconds), and what came back."""

    operation: str  # "book", "hold" or "confirm"
    key: str
    sent: float
    answered: float
    status: int | None  # None when no answer came (the transport failed)
    outcome: str  # "201", "503 service_unavailable" (status and problem code), "ReadTimeout"

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Acknowledged:
    """What the server acknowledged (2xx), as it said it."""

    bookings: dict[str, int] = field(default_factory=dict)  # booking id -> qty
    holds: dict[str, str] = field(default_factory=dict)  # hold id -> status answered last
    booking_of_key: dict[str, str] = field(default_factory=dict)  # key -> booking id


class GaveUp(RuntimeError):
    """A request got no answer before the deadline, or an answer no retry can change."""


class RetryingClients:
    """`bookers` booking loops and `checkouts` checkout loops against one section set."""

    def __init__(
        self,
        base_url: str,
        event_id: str,
        section_ids: list[str],
        *,
        bookers: int = 8,
        checkouts: int = 4,
        deadline_seconds: float = 120.0,
        request_timeout: float = 15.0,
    ) -> None:
        self.base_url = base_url
        self.event_id = event_id
        self.section_ids = section_ids
        self.bookers = bookers
        self.checkouts = checkouts
        self.deadline_seconds = deadline_seconds
        self.request_timeout = request_timeout
        self.attempts: list[Attempt] = []
        self.acknowledged = Acknowledged()
        self.failures: list[str] = []  # answers that no retry may change: must stay empty
        self.intents = 0  # keys sent (each a booking, a hold or a confirmation)
        self._sections = itertools.cycle(section_ids)
        self._customers = itertools.count()

    async def run(self, stop: asyncio.Event) -> None:
        """Start new intents until `stop` is set; finish (or give up) the ones under way."""
        limits = httpx.Limits(max_connections=self.bookers + self.checkouts)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.request_timeout, limits=limits
        ) as client:
            loops = [self._booking_loop(client, stop) for _ in range(self.bookers)]
            loops += [self._checkout_loop(client, stop) for _ in range(self.checkouts)]
            await asyncio.gather(*loops)

    def successes(self) -> int:
        return sum(attempt.succeeded for attempt in self.attempts)

    async def _booking_loop(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            body = {
                "eventId": self.event_id,
                "sectionId": next(self._sections),
                "qty": 1 + next(self._customers) % 3,
                "customerId": f"c{next(self._customers)}",
            }
            key = f"book-{uuid.uuid4()}"
            answer = await self._until_answered(client, "book", "/book", body, key)
            if answer is not None:
                self.acknowledged.bookings[answer["id"]] = answer["qty"]
                self.acknowledged.booking_of_key[key] = answer["id"]

    async def _checkout_loop(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            body = {
                "eventId": self.event_id,
                "customerId": f"c{next(self._customers)}",
                "items": [{"sectionId": next(self._sections), "qty": 1}],
            }
            hold = await self._until_answered(
                client, "hold", "/holds", body, f"hold-{uuid.uuid4()}"
            )
            if hold is None:
                continue
            self.acknowledged.holds[hold["id"]] = hold["status"]
            confirm_key = f"confirm-{hold['id']}"
            confirmed = await self._until_answered(
                client,
                "confirm",
                f"/holds/{hold['id']}/confirm",
                {"paymentReference": f"pay-{hold['id']}"},
                confirm_key,
            )
            if confirmed is not None:
                self.acknowledged.holds[hold["id"]] = confirmed["hold"]["status"]
                for booking in confirmed["bookings"]:
                    self.acknowledged.bookings[booking["id"]] = booking["qty"]
                self.acknowledged.booking_of_key[confirm_key] = ",".join(
                    sorted(booking["id"] for booking in confirmed["bookings"])
                )

    async def _until_answered(
        self,
        client: httpx.AsyncClient,
        operation: str,
        path: str,
        body: dict[str, Any],
        key: str,
    ) -> dict[str, Any] | None:
        """The 2xx answer's body, after as many tries with `key` as it takes; None on a refusal."""
        self.intents += 1
        deadline = time.monotonic() + self.deadline_seconds
        while True:
            sent = time.monotonic()
            wait = RETRY_WAIT_AFTER_ERROR_SECONDS
            try:
                response = await client.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError as error:
                failed = type(error).__name__
                attempt = Attempt(operation, key, sent, time.monotonic(), None, failed)
            else:
                attempt = Attempt(
                    operation, key, sent, time.monotonic(), response.status_code, _outcome(response)
                )
                if response.status_code in RETRIED_STATUSES:
                    wait = float(response.headers.get("Retry-After", wait))
            self.attempts.append(attempt)
            if attempt.succeeded:
                answer: dict[str, Any] = response.json()
                return answer
            if attempt.status is not None and attempt.status not in RETRIED_STATUSES:
                # A refusal or a bug: retrying with the same key would replay it.
                self.failures.append(f"{operation} {key}: {response.text[:300]}")
                return None
            if time.monotonic() + wait > deadline:
                self.failures.append(f"{operation} {key}: no answer in {self.deadline_seconds} s")
                return None
            await asyncio.sleep(min(wait, MAX_RETRY_WAIT_SECONDS))


def _outcome(response: httpx.Response) -> str:
    if response.is_success or "problem+json" not in response.headers.get("content-type", ""):
        return str(response.status_code)
    return f"{response.status_code} {response.json().get('code', '')}"


@dataclass(frozen=True)
class Outage:
    """What clients saw of a fault at `fault_at`: how long no request succeeded, how many failed."""

    last_success_before: float  # seconds before the fault (positive)
    first_success_after: float  # seconds after the fault
    failed_attempts: int  # between the fault and the first success after it
    failed_by_outcome: dict[str, int]
    retried_until_answered: int  # keys that needed more than one try
    last_failure_after: float  # seconds after the fault: when every client had recovered

    @property
    def gap(self) -> float:
        """From the last success before the fault to the first one after it."""
        return self.last_success_before + self.first_success_after

    @classmethod
    def of(cls, attempts: list[Attempt], fault_at: float) -> Outage:
        before = [a.answered for a in attempts if a.succeeded and a.answered <= fault_at]
        # A request sent before the fault may have been answered by the old primary.
        after = [a.answered for a in attempts if a.succeeded and a.sent > fault_at]
        if not before or not after:
            raise ValueError("no success on one side of the fault: nothing to measure")
        recovered = min(after)
        failed = [a for a in attempts if not a.succeeded and fault_at <= a.answered <= recovered]
        by_outcome: dict[str, int] = {}
        for attempt in failed:
            by_outcome[attempt.outcome] = by_outcome.get(attempt.outcome, 0) + 1
        tries: dict[str, int] = {}
        for attempt in attempts:
            tries[attempt.key] = tries.get(attempt.key, 0) + 1
        failures_after = [
            a.answered for a in attempts if not a.succeeded and a.answered >= fault_at
        ]
        return cls(
            last_success_before=fault_at - max(before),
            first_success_after=recovered - fault_at,
            failed_attempts=len(failed),
            failed_by_outcome=dict(sorted(by_outcome.items())),
            retried_until_answered=sum(count > 1 for count in tries.values()),
            last_failure_after=(max(failures_after) - fault_at) if failures_after else 0.0,
        )
