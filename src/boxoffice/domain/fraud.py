"""Fraud flags: suspicious patterns noticed, for a person to look at. A flag blocks nothing.

The original design asked to "flag suspicious patterns"; the rules and their
thresholds are settings (`FraudRules`):

| rule                  | raised when, within `window` seconds                                  |
|-----------------------|-----------------------------------------------------------------------|
| `max_quantity_repeat` | one buyer (customer, else key, else address) bought or held at the    |
|                       | per-request maximum `max_quantity_repeats` times                      |
| `many_refusals`       | one caller (key, else address) was refused `refusals` times: sold out, |
|                       | over a limit, not found, forbidden, unauthorized, rate limited        |
| `hold_churn`          | a customer gave up (released, let lapse) `hold_churn` holds in the    |
|                       | last hour (read with its hold caps, see `domain/hold_caps.py`)        |
| `shared_address`      | `customers_per_address` different customers bought or held from one   |
|                       | client address (in any events: an admin's flag, tied to no event)     |

`Watch` counts in this process's memory: with several processes each counts
what it sees, so a pattern spread over them is flagged later, or not at all.
Each rule flags one subject at most once per window (per event where the
rule has one), so a bot's thousand refusals make one flag, not a thousand.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, get_args

Rule = Literal["max_quantity_repeat", "many_refusals", "hold_churn", "shared_address"]
RULES: tuple[Rule, ...] = get_args(Rule)


@dataclass(frozen=True, slots=True)
class FraudRules:
    """Thresholds; 0 turns a rule off."""

    window_seconds: float = 600
    max_quantity_repeats: int = 5
    refusals: int = 30
    hold_churn: int = 10
    customers_per_address: int = 10


@dataclass(frozen=True, slots=True)
class Flag:
    """What was seen, by whom, where and when."""

    rule: Rule
    at: datetime
    event_id: str | None = None
    customer_id: str | None = None
    key_id: str | None = None
    address: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None  # its place in the stored list, once stored


class Caller(NamedTuple):
    """Who made a request, as far as the flags care (a tuple: one is made per purchase)."""

    key_id: str | None
    customer_id: str | None
    address: str | None

    @property
    def buyer(self) -> str:
        return (
            f"customer:{self.customer_id}"
            if self.customer_id
            else f"key:{self.key_id}"
            if self.key_id
            else f"address:{self.address}"
        )

    @property
    def requester(self) -> str:
        return f"key:{self.key_id}" if self.key_id else f"address:{self.address}"


class Watch:
    """Sliding-window counts per subject, and the flags they raise. Plain Python: the
    caller passes the time (seconds on any steady clock) and the wall-clock `at`."""

    def __init__(self, rules: FraudRules, *, max_subjects: int = 100_000) -> None:
        self.rules = rules
        self.max_subjects = max_subjects
        self.times: dict[tuple[str, str], deque[float]] = {}  # (rule, subject) -> times
        # address -> customer -> last seen, the longest unseen first
        self.customers: dict[str, OrderedDict[str, float]] = {}
        self.raised: dict[tuple[str, str, str | None], float] = {}  # -> when last flagged

    def purchase(
        self,
        now: float,
        at: datetime,
        who: Caller,
        event_id: str,
        qty: int,
        max_qty: int,
    ) -> list[Flag]:
        """A booking or hold that went through."""
        found: list[Flag] = []
        limit = self.rules.max_quantity_repeats
        if limit and qty >= max_qty:
            count = self._count("max_quantity_repeat", who.buyer, now, limit)
            if count >= limit and self._first("max_quantity_repeat", who.buyer, event_id, now):
                found.append(
                    self._flag(
                        "max_quantity_repeat",
                        at,
                        who,
                        event_id,
                        count=count,
                        qty=qty,
                        windowSeconds=self.rules.window_seconds,
                    )
                )
        limit = self.rules.customers_per_address
        if limit and who.customer_id and who.address:
            seen = self.customers.get(who.address)
            if seen is None:
                seen = self.customers[who.address] = OrderedDict()
            seen[who.customer_id] = now
            seen.move_to_end(who.customer_id)
            # Oldest first: only those gone quiet are looked at. (Going through them all, on
            # every purchase, cost a shop's backend, whose customers all share its address,
            # a sixth of a worker's time in `make onsale`.)
            while seen and (
                len(seen) > self.max_subjects
                or now - next(iter(seen.values())) > self.rules.window_seconds
            ):
                seen.popitem(last=False)
            if len(seen) >= limit and self._first("shared_address", who.address, None, now):
                found.append(
                    self._flag(
                        "shared_address",
                        at,
                        Caller(who.key_id, None, who.address),
                        None,  # customers of any organizer's events: for admins only
                        customers=sorted(seen)[:20],
                        count=len(seen),
                        windowSeconds=self.rules.window_seconds,
                    )
                )
            self._bound(self.customers)
        return found

    def refusal(
        self, now: float, at: datetime, who: Caller, code: str, event_id: str | None
    ) -> list[Flag]:
        """A request refused for a reason a careful client rarely meets."""
        limit = self.rules.refusals
        if not limit:
            return []
        count = self._count("many_refusals", who.requester, now, limit)
        if count < limit or not self._first("many_refusals", who.requester, None, now):
            return []
        return [
            self._flag(
                "many_refusals",
                at,
                who,
                event_id,
                count=count,
                lastCode=code,
                windowSeconds=self.rules.window_seconds,
            )
        ]

    def hold_churn(
        self, now: float, at: datetime, who: Caller, event_id: str, churned: int
    ) -> list[Flag]:
        """A customer about to hold again has given up `churned` holds in the last hour."""
        limit = self.rules.hold_churn
        if not limit or churned < limit or not who.customer_id:
            return []
        if not self._first("hold_churn", who.buyer, None, now):
            return []
        return [self._flag("hold_churn", at, who, event_id, givenUpLastHour=churned)]

    def _count(self, rule: str, subject: str, now: float, limit: int) -> int:
        """Record one occurrence; how many fell within the window (at most `limit`)."""
        times = self.times.get((rule, subject))
        if times is None:
            times = self.times[(rule, subject)] = deque(maxlen=limit)
            self._bound(self.times)
        times.append(now)
        while times and now - times[0] > self.rules.window_seconds:
            times.popleft()
        return len(times)

    def _first(self, rule: str, subject: str, event_id: str | None, now: float) -> bool:
        """Whether this is the first flag of its kind within the window (then remember it)."""
        key = (rule, subject, event_id)
        last = self.raised.get(key)
        if last is not None and now - last <= self.rules.window_seconds:
            return False
        self.raised[key] = now
        self._bound(self.raised)
        return True

    def _bound(self, table: dict[Any, Any]) -> None:
        if len(table) > self.max_subjects:  # a flood of subjects: forget the oldest tenth
            for key in list(table)[: self.max_subjects // 10]:
                del table[key]

    @staticmethod
    def _flag(rule: Rule, at: datetime, who: Caller, event_id: str | None, **evidence: Any) -> Flag:
        return Flag(rule, at, event_id, who.customer_id, who.key_id, who.address, evidence)
