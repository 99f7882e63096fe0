"""Caps on a customer's holds: how many at once, and how many given up per hour.

Holding most of a sale's seats, letting them lapse and holding them again is
how bots deny stock to people (OWASP API6, "hold 90% of the seats, release,
hold again"). Per-event `maxPerCustomer` caps tickets; these cap the holds
themselves, across events:

- `active`: holds a customer may have active (not confirmed, released or
  expired) at once: MAX_ACTIVE_HOLDS_PER_CUSTOMER;
- `churn_per_hour`: holds a customer may give up (release, or let lapse) in
  the last hour before it may hold again: MAX_HOLD_CHURN_PER_HOUR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from boxoffice.domain.errors import ActiveHoldLimit, HoldChurnLimit

CHURN_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class HoldCaps:
    active: int | None  # None: no cap
    churn_per_hour: int | None

    @property
    def any(self) -> bool:
        return self.active is not None or self.churn_per_hour is not None


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """A customer's holds as they stand: active ones, and those given up within the hour."""

    active: int
    churned: int
    oldest_churn: datetime | None  # when the oldest give-up in the window happened


def check_hold_caps(caps: HoldCaps, record: HoldRecord, now: datetime) -> None:
    """Raise when one more hold would break a cap."""
    if caps.active is not None and record.active >= caps.active:
        raise ActiveHoldLimit(caps.active)
    if caps.churn_per_hour is not None and record.churned >= caps.churn_per_hour:
        oldest = record.oldest_churn or now
        wait = (oldest + CHURN_WINDOW - now).total_seconds()
        raise HoldChurnLimit(caps.churn_per_hour, max(1, math.ceil(wait)))
