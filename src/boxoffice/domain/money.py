"""Money is exact: integer minor units (cents) inside, decimals at the edges."""

from __future__ import annotations

from decimal import Decimal

Cents = int

CENTS_PER_UNIT = 100


def to_cents(amount: Decimal) -> Cents:
    """Convert a decimal amount with at most two places to whole cents, exactly."""
    cents = amount * CENTS_PER_UNIT
    if cents != cents.to_integral_value():
        raise ValueError(f"{amount} has more than two decimal places")
    return int(cents)


def from_cents(cents: Cents) -> Decimal:
    """The decimal amount for a number of cents, with two places (`500` is `5.00`)."""
    # Exact: moves the decimal point instead of dividing and rounding (half the time).
    return Decimal(cents).scaleb(-2)
