"""Fairness of a finished sale, measured: two figures from who stood where and who got in.

- `position_success_correlation`: Spearman's rank correlation between a
  customer's place in line (1 = front) and whether it bought anything. In a
  line that keeps its order, earlier places succeed and later ones find the
  seats gone: close to -1. Near 0, place did not matter (a lottery, or a
  stampede that ignores the line). Spearman rather than Pearson because a
  place is an ordinal and success falls off a cliff at the sell-out rather than
  along a line: ranks make the figure independent of the scale of places, so a
  run of 2,000 and one of 200,000 compare, and ties (success is 0 or 1) take
  their average rank. Pearson on those ranks is the point-biserial correlation
  of rank and success.
- `largest_inversion`: for two customers A ahead of B in the line, an
  inversion is B admitted strictly before A. The figure is the largest such
  gap, in places (how far behind A was B) and in seconds (how much earlier B
  got in, among those both admitted). Customers admitted in the same step are
  not inverted. A customer never admitted counts as admitted after everyone,
  so skipping over someone who then never got in is an inversion too.

"The line" is the order the room promised: join order for `fifo` joiners, and
for the pre-queue, the shuffled order its keys give (so the shuffle itself is
not counted as unfair).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Inversion", "largest_inversion", "position_success_correlation", "spearman"]


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for index in order[start : end + 1]:
            ranks[index] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var_x = sum((x - mean_x) ** 2 for x in xs)
    var_y = sum((y - mean_y) ** 2 for y in ys)
    if var_x == 0 or var_y == 0:
        return None
    return cov / math.sqrt(var_x * var_y)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho; None when either side has no variation (it is undefined)."""
    if len(xs) != len(ys):
        raise ValueError("both sides need as many values")
    if len(xs) < 2:
        return None
    return _pearson(_ranks(xs), _ranks(ys))


def position_success_correlation(
    positions: Sequence[int], succeeded: Sequence[bool]
) -> float | None:
    """Spearman's rho between place in line and success: -1 when the line decided exactly
    who bought; None if everyone (or no one) succeeded."""
    return spearman([float(p) for p in positions], [1.0 if s else 0.0 for s in succeeded])


@dataclass(frozen=True, slots=True)
class Inversion:
    places: int  # 0: nobody got in before someone ahead of them
    seconds: float  # among those both admitted


def largest_inversion(admitted_at: Sequence[datetime | None]) -> Inversion:
    """The largest inversion of a line, given when each customer in line order was
    admitted (None: never)."""
    times = [math.inf if t is None else t.timestamp() for t in admitted_at]
    running_max: list[float] = []  # the latest admission among the first i+1
    admitted_max = -math.inf  # the latest admission among those ahead who got in
    places, seconds = 0, 0.0
    for position, time in enumerate(times):
        if running_max and running_max[-1] > time:
            # the first customer ahead admitted after this one: running_max is sorted
            first = bisect.bisect_right(running_max, time)
            places = max(places, position - first)
            if admitted_max > time:
                seconds = max(seconds, admitted_max - time)
        running_max.append(max(time, running_max[-1]) if running_max else time)
        if time != math.inf:
            admitted_max = max(admitted_max, time)
    return Inversion(places, seconds)
