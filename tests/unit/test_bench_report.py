"""The benchmark's report: ratios are taken within a round, then the median round is shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench import run as bench_run
from bench.run import (
    BASELINE_SCENARIOS,
    OPT_IN_SCENARIOS,
    SCENARIOS,
    Result,
    markdown,
    medians,
    ratios,
    server_env,
)


def result(scenario: str, rps: float, round_number: int) -> Result:
    return Result(
        database="sqlite",
        scenario=scenario,
        connections=64,
        round=round_number,
        rps=rps,
        p50_ms=1.0,
        p99_ms=2.0,
        p999_ms=3.0,
        non_2xx_share=0.0,
        socket_errors=0,
        created=int(rps),
        stored=int(rps),
        oversold=0,
        leaked=0,
        verified=True,
    )


# Round 2 is slow for everything (a noisy neighbour): its ratio is still fair.
RESULTS = [
    result("ceiling", 5000, 1),
    result("hot batched", 4000, 1),
    result("hot direct", 500, 1),
    result("ceiling", 2000, 2),
    result("hot batched", 1800, 2),
    result("hot direct", 250, 2),
    result("ceiling", 4800, 3),
    result("hot batched", 3600, 3),
    result("hot direct", 480, 3),
]


def test_ratios_are_taken_within_each_round_then_the_median_is_reported() -> None:
    (row,) = ratios(RESULTS)
    hot = row["hot batched / ceiling"]
    assert hot["rounds"] == [4000 / 5000, 1800 / 2000, 3600 / 4800]
    assert hot["median"] == 0.8
    assert (hot["min"], hot["max"]) == (0.75, 0.9)
    assert row["hot batched / direct"]["median"] == 7.5
    assert row["spread batched / ceiling"] is None


def test_each_scenario_row_is_its_median_round() -> None:
    chosen = {r.scenario: r for r in medians(RESULTS)}
    assert chosen["ceiling"].round == 3
    assert chosen["hot batched"].round == 3
    assert chosen["hot direct"].rps == 480
    assert len(medians(RESULTS[:2])) == 2  # one round: itself


def test_the_report_shows_the_range_over_rounds() -> None:
    table = markdown(RESULTS, ratios(RESULTS), "make bench", 3)
    assert "| ratio | target | sqlite 64 |" in table
    assert "| hot batched / ceiling | ≥ 0.8 | 0.80 (0.75–0.90) |" in table
    assert "| hot batched / direct | ≥ 5 | 7.50 (7.20–8.00) |" in table
    assert "spread batched" not in table.split("Ratios")[1], "a ratio with no figures is shown"
    assert "3 round(s)" in table
    assert "inventory verified after every run" in table


def test_a_failure_in_any_round_shows_even_when_the_median_round_passed() -> None:
    failed = result("hot batched", 1800, 2)
    failed.verified = False
    failed.socket_errors = 3
    results = [failed if r.round == 2 and r.scenario == "hot batched" else r for r in RESULTS]
    table = markdown(results, ratios(results), "make bench", 3)
    assert "| sqlite | hot batched | 64 | 3,600 |" in table  # round 3 is the median ...
    assert "| NO |" in table.split("| sqlite | hot batched | 64 |")[1].split("\n")[0]
    assert "3 socket errors" in table
    assert "inventory verification FAILED in 1 runs" in table


def test_a_zero_throughput_round_is_left_out_of_the_ratios() -> None:
    results = [result("ceiling", 0, 1), result("hot batched", 10, 1), *RESULTS[3:]]
    (row,) = ratios(results)
    assert row["hot batched / ceiling"]["rounds"] == [1800 / 2000, 3600 / 4800]


def test_set_reaches_the_server_and_wins_over_the_scenario(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--set NAME=VALUE` was once parsed and then never passed on: every "A/B" was A/A."""
    thread_writer = next(s for s in OPT_IN_SCENARIOS if s.sqlite_writer == "thread")
    assert server_env(thread_writer)["SQLITE_WRITER"] == "thread"
    assert "SQLITE_WRITER" not in server_env(SCENARIOS[1])
    monkeypatch.setattr(bench_run, "EXTRA_ENV", {"MAX_BATCH_SIZE": "16", "SQLITE_WRITER": "x"})
    env = server_env(thread_writer)
    assert env["MAX_BATCH_SIZE"] == "16"
    assert env["SQLITE_WRITER"] == "x"
    assert env["BOOKING_STRATEGY"] == "batched"


def test_a_checkout_counts_request_pairs_against_the_ceiling() -> None:
    (row,) = ratios([result("ceiling", 5000, 1), result("checkout", 4000, 1)])
    assert row["checkout pairs / ceiling"]["median"] == pytest.approx(0.4)


def test_baseline_scenarios_run_the_older_tree(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench_run, "BASELINE", tmp_path)
    (before,) = [s for s in BASELINE_SCENARIOS if s.name == "hot batched"]
    assert before.label == "hot batched (before)"
    assert server_env(before)["PYTHONPATH"].split(os.pathsep) == [
        str(tmp_path / "src"),
        str(tmp_path),
    ]
    (now,) = [s for s in SCENARIOS if s.label == "hot batched"]
    assert "PYTHONPATH" not in server_env(now)


def test_pooled_scenarios_run_with_db_pooler_on_postgresql_only() -> None:
    pooled = {s.label: s for s in SCENARIOS if s.pooler}
    assert {
        "hot batched pooler-safe",
        "hot batched via pgbouncer",
        "checkout via pgbouncer",
    } <= set(pooled)
    for scenario in pooled.values():
        assert server_env(scenario)["DB_POOLER"] == "transaction"
        assert scenario.databases == ("postgresql",)
    (direct,) = [s for s in SCENARIOS if s.label == "hot batched"]
    assert "DB_POOLER" not in server_env(direct)
    (row,) = ratios([result("hot batched", 1000, 1), result("hot batched via pgbouncer", 900, 1)])
    assert row["hot batched via pgbouncer / direct"]["median"] == pytest.approx(0.9)
