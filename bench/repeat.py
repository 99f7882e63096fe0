"""One scenario's same server, run after run: how much the host alone moves a figure.

    .venv/bin/python -m bench.repeat --runs 8 --database postgresql --scenario "hot batched"

Each run is `bench/run.py`'s (a fresh database and server, a warm-up, wrk), with the
server logging at INFO so that its `group_commit_stats` (batches, requests per batch,
retries) show whether the work itself changed between runs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

from tests.support.postgres import ThrowawayPostgres

from bench import run as bench

_STATS = re.compile(r"group_commit_stats.*?batches=(\d+).*?requests=(\d+).*?retried=(\d+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--scenario", default="hot batched", help="a label of bench/run.py")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    scenario = next(
        s for s in bench.SCENARIOS if s.label == args.scenario and args.database in s.databases
    )
    bench.EXTRA_ENV["LOG_LEVEL"] = "INFO"
    wrk = bench.ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="boxoffice-repeat-"))
    workdir.chmod(0o755)
    postgres = ThrowawayPostgres().start() if args.database == "postgresql" else None
    header = ("run", "req/s", "server CPU µs/req", "PostgreSQL CPU µs/req", "batches")
    print("| " + " | ".join((*header, "per batch", "retried")) + " |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for n in range(1, args.runs + 1):
            logs = set(workdir.glob("boxoffice-server-*.log"))
            result = bench.run_one(
                wrk,
                args.database,
                scenario,
                args.connections,
                args.duration,
                postgres,
                workdir,
                n,
                args.warmup,
            )
            (log,) = set(workdir.glob("boxoffice-server-*.log")) - logs
            found = _STATS.findall(log.read_text(errors="replace"))
            batches, requests, retried = (int(x) for x in found[-1]) if found else (0, 0, 0)
            per_batch = f"{requests / batches:.1f}" if batches else "-"
            print(
                f"| {n} | {result.rps:,.0f} | {result.server_cpu_us:.0f} | "
                f"{result.postgres_cpu_us:.0f} | {batches:,} | {per_batch} | {retried} |",
                flush=True,
            )
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
