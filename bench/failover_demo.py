"""make failover-demo: kill -9 the primary under load and print what clients saw and what is left.

A pg_auto_failover monitor, primary and synchronous secondary on loopback,
Boxoffice with `--workers 2` through a URL naming both nodes, clients booking,
holding and confirming under Idempotency-Keys and retrying every failure with
the same key; then kill -9 of the primary's postmaster and its keeper (the node
is lost), and the monitor promotes the secondary. Printed: how long no request
succeeded, how many failed meanwhile, and whether the new primary holds every
acknowledged booking and hold, none twice, with `boxoffice check` passing.
Exits 1 if anything acknowledged was lost or doubled, or a request was not
answered in the end.

    python -m bench.failover_demo                      # pg_auto_failover's default timeouts
    python -m bench.failover_demo --detection fast     # the test's: a dead node noticed in ~3 s
    python -m bench.failover_demo --fault postmaster   # the postmaster alone; its keeper lives
    python -m bench.failover_demo --fault secondary    # commits wait for the lost standby

(`make failover-demo FAILOVER_ARGS='--detection fast'` passes them on.)
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.auto_failover import auto_failover_formation, pg_autoctl
from tests.support.failover_drill import FAST_DETECTION, DrillReport, failover_drill


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--detection",
        choices=["default", "fast"],
        default="default",
        help="the monitor's timeouts: pg_auto_failover's defaults, or the test's",
    )
    parser.add_argument(
        "--fault",
        choices=["node", "postmaster", "secondary"],
        default="node",
        help="kill -9 the primary's postmaster and keeper (the node is lost), its "
        "postmaster alone (the keeper restarts it; the monitor may fail over or not), "
        "or the secondary's (commits wait until the monitor turns synchronous replication off)",
    )
    parser.add_argument("--bookers", type=int, default=8, help="clients booking (POST /book)")
    parser.add_argument("--checkouts", type=int, default=4, help="clients holding, then confirming")
    args = parser.parse_args()
    settings = FAST_DETECTION if args.detection == "fast" else {}
    print(f"{_version()}; monitor timeouts: {args.detection}; fault: {args.fault}")
    print("Setting up a monitor, a primary and a synchronous secondary on loopback ...")
    with (
        tempfile.TemporaryDirectory(prefix="boxoffice-failover-demo-") as logs,
        auto_failover_formation(monitor_settings=settings) as formation,
    ):
        print(f"DATABASE_URL={formation.url()}")
        report = asyncio.run(
            failover_drill(
                formation,
                log_dir=Path(logs),
                bookers=args.bookers,
                checkouts=args.checkouts,
                fault=args.fault,
            )
        )
    return _print(report, args)


def _version() -> str:
    found = subprocess.run([pg_autoctl(), "--version"], capture_output=True, text=True)
    return found.stdout.splitlines()[0] if found.stdout else "pg_autoctl"


def _print(report: DrillReport, args: argparse.Namespace) -> int:
    outage = report.outage
    killed = {
        "node": f"{report.old_primary}'s postmaster and keeper",
        "postmaster": f"{report.old_primary}'s postmaster",
        "secondary": "the secondary's postmaster and keeper",
    }[report.fault]
    promoted = (
        f"{report.new_primary} at {report.promoted_after:.1f} s"
        if report.promoted_after is not None
        else f"none: {report.new_primary} still primary"
    )
    failed = ", ".join(f"{outcome}: {count}" for outcome, count in outage.failed_by_outcome.items())
    rows = [
        ("clients", f"{args.bookers} booking, {args.checkouts} holding then confirming"),
        ("synchronous_standby_names before", report.sync_standby_names_before),
        ("fault (t = 0)", f"kill -9 of {killed}"),
        ("new primary shown by the monitor", promoted),
        ("last success before the kill", f"{outage.last_success_before:.2f} s before"),
        ("first success after the kill", f"{outage.first_success_after:.1f} s after"),
        ("no success for", f"{outage.gap:.1f} s"),
        ("failed attempts in between", f"{outage.failed_attempts} ({failed or 'none'})"),
        ("last failed attempt", f"{outage.last_failure_after:.1f} s after"),
        ("keys retried until answered", str(outage.retried_until_answered)),
        ("intents / HTTP attempts", f"{report.intents} / {report.attempts}"),
        ("requests never answered 2xx", str(len(report.failures))),
        (
            f"bookings acknowledged / on {report.new_primary}",
            f"{len(report.acknowledged_bookings)} / {len(report.stored_bookings)} "
            f"(lost {len(report.lost_bookings)}, stored unanswered "
            f"{len(report.unanswered_bookings)})",
        ),
        (
            f"holds acknowledged / on {report.new_primary}",
            f"{len(report.acknowledged_holds)} / {len(report.stored_holds)} "
            f"(lost {len(report.lost_holds)}, confirmation lost "
            f"{len(report.holds_unlike_answered)})",
        ),
        (
            f"boxoffice check on {report.new_primary}",
            "passed" if report.check_returncode == 0 else "FAILED",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for failure in report.failures[:10]:
        print(f"  never answered: {failure}")
    if report.failures:
        print("The server's log:\n" + report.server_log[-20000:])
    if report.check_returncode != 0:
        print(report.check_output)
    whole = not (
        report.failures
        or report.lost_bookings
        or report.unanswered_bookings
        or report.lost_holds
        or report.holds_unlike_answered
        or report.check_returncode
    )
    print("PASSED: nothing acknowledged lost, nothing done twice." if whole else "FAILED")
    return 0 if whole else 1


if __name__ == "__main__":
    sys.exit(main())
