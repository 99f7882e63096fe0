"""The million-attempt sale in small (bench/onsale.py, `make onsale`): the same generator
(wrk playing every customer and the three bots), server and checks, with 2,000
customers and 1,000 seats, so the benchmark cannot rot. Timing is the benchmark's to
measure, not this test's: it checks what must hold at any speed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from bench.onsale import LOOP_LAG_ROW, SaleConfig, checks, lag_over_time, run_sale

pytestmark = pytest.mark.e2e

SMALL = SaleConfig(
    customers=2000,
    seats=1000,
    sections=4,
    prequeue_seconds=4,
    arrival_seconds=10,
    new_users_per_minute=3000,
    total_active_users=3000,
    session_seconds=60,
    hold_ttl_seconds=10,
    threads=1,
    connections=64,
    deadline_seconds=240,
)


# PostgreSQL with two workers, as `make onsale` runs; a minute and a half here, so the suite
# runs it once: the sale without the room (everyone at POST /holds) is `make onsale`'s, and
# the room on SQLite is tests/e2e/test_waiting_room_sale.py's.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_small_on_sale_through_the_room(database_url: str, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    sale = run_sale(database_url, replace(SMALL, workers=2), tmp_path)
    passed = {name: (ok, figures) for name, ok, figures in checks(sale)}

    for name in (
        "nothing oversold or leaked, every booking stored, check and audit pass",
        "no 5xx",
        "every bot held to one place or rate-limited, the forged ticket refused",
        "every customer played to the end",
    ):
        assert passed[name][0], (name, passed[name][1])
    assert sale.sold_out
    assert sale.seats_sold == SMALL.seats
    assert sale.batches_failed == 0, sale.server_warnings
    assert sale.finals.get("bought", 0) > 0
    assert sale.finals.get("sold_out", 0) > 0  # told, not left waiting
    # Every endpoint was exercised, and the polls were most of the requests.
    for endpoint in ("join", "poll", "hold", "confirm"):
        assert sale.statuses.get(endpoint), endpoint
    assert sum(sale.statuses["poll"].values()) > sale.requests / 2
    # The line's order is kept exactly, and it decided who bought.
    assert sale.inversion_places == 0
    assert sale.correlation is not None
    assert sale.ideal_correlation is not None
    assert sale.correlation < 0.5 * sale.ideal_correlation < 0, (
        sale.correlation,
        sale.ideal_correlation,
    )
    # The server's own histogram counted what wrk sent (every worker's, summed).
    inside = sale.server_latency
    holds = sum(sale.statuses["hold"].values())
    assert inside["POST /holds"]["requests"] >= holds
    assert 0 < inside["POST /holds"]["p50_under_ms"] <= inside["POST /holds"]["p99_under_ms"]
    assert 0 <= inside["GET /queue/{ticket}"]["within_100ms"] <= 1
    # Each worker's loop was probed ten times a second throughout (a minute or more).
    assert inside[LOOP_LAG_ROW]["requests"] >= 300
    windows = lag_over_time(sale.timeline)
    assert windows, "the sale's watcher never read the loops' lag"
    assert any(w["db_active"] is not None for w in windows), "no database session sampled"
