"""What a poll costs, answered by the server's protocol and by the app, side by side.

    .venv/bin/python -m bench.polls [--customers 8000] [--rounds 3] [--duration 8]

One server (`boxoffice serve`, one worker, SQLite: a poll touches no database),
one event whose waiting room opens in an hour, `--customers` in its pre-queue.
wrk polls their tickets in turn, at 64 connections, alternately as is (the plain
poll the protocol answers itself, `api/http_protocol.py`) and with an `Origin`
header (left to the app: `PollFastPath` and the middleware around it). Each run
reports requests/s and the server's CPU per poll; rounds alternate the two so
the host's drift falls on both. The server remembers only 1,000 tickets'
pace (MAX_POLLS_TRACKED), fewer than each of wrk's threads polls in turn, so no
poll is too soon.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from tests.support.server import ServerProcess, process_group

from bench.run import RESULTS, ROOT, cpu_seconds, cpu_spent, ensure_wrk, fresh_database, run_wrk

POLLS_LUA = ROOT / "bench" / "polls.lua"
WAYS = {"protocol": [], "app": ["origin"]}
JOINERS = 8
FLUSH = 1100  # more tickets than the server remembers the pace of (MAX_POLLS_TRACKED 1000)


def join_all(url: str, event_id: str, customers: int) -> list[str]:
    def join(first: int) -> list[str]:
        with httpx.Client(base_url=url, timeout=30) as http:
            tickets = []
            for n in range(first, customers, JOINERS):
                answer = http.post(f"/events/{event_id}/queue", json={"customerId": f"c{n}"})
                answer.raise_for_status()
                tickets.append(str(answer.json()["ticket"]))
            return tickets

    with ThreadPoolExecutor(JOINERS) as pool:
        return [ticket for some in pool.map(join, range(JOINERS)) for ticket in some]


def poll_once(url: str, tickets: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        for ticket in tickets:
            http.get(f"/queue/{ticket}").raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--output", type=Path, default=RESULTS / "polls.md")
    args = parser.parse_args()
    wrk = ensure_wrk()
    rows: dict[str, list[tuple[float, float, float]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="polls-") as folder:
        workdir = Path(folder)
        url = fresh_database("sqlite", None, workdir)
        env = {"MAX_POLLS_TRACKED": "1000", "WAITING_ROOM_REFRESH_MS": "200"}
        with ServerProcess(url, env=env, log_dir=workdir) as server:
            event = httpx.post(
                f"{server.url}/events",
                json={"name": "Polls", "sections": [{"name": "GA", "price": 1, "capacity": 10}]},
            ).json()
            opens = datetime.now(UTC) + timedelta(hours=1)
            httpx.put(
                f"{server.url}/events/{event['id']}/waiting-room",
                json={
                    "newUsersPerMinute": 60,
                    "totalActiveUsers": 60,
                    "prequeueOpensAt": (opens - timedelta(hours=2)).isoformat(),
                    "opensAt": opens.isoformat(),
                },
            ).raise_for_status()
            joined = join_all(server.url, event["id"], args.customers + FLUSH)
            tickets = workdir / "tickets.txt"
            tickets.write_text("\n".join(joined[FLUSH:]))
            # Each wrk run starts at its list's top, which the run before may have polled
            # just now: between runs, these others are polled once each, so the server
            # forgets every ticket of the run before (it keeps the last 1,000).
            flush = joined[:FLUSH]
            assert server.process is not None
            pids = process_group(server.process.pid)
            for extra in WAYS.values():  # warm-up, not measured
                run_wrk(wrk, server.url, [str(POLLS_LUA), "--", str(tickets), *extra], 64, 2)
                poll_once(server.url, flush)
            for round_number in range(args.rounds):
                order = list(WAYS) if round_number % 2 == 0 else list(reversed(WAYS))
                for way in order:
                    script = [str(POLLS_LUA), "--", str(tickets), *WAYS[way]]
                    before = cpu_seconds(pids)
                    stats = run_wrk(wrk, server.url, script, args.connections, args.duration)
                    spent = cpu_spent(before, cpu_seconds(pids))
                    poll_once(server.url, flush)
                    if stats["other"] or stats["answered"] != stats["requests"]:
                        raise SystemExit(f"{way}: not every poll was answered 200: {stats}")
                    rps = stats["requests"] / (stats["duration_us"] / 1e6)
                    per = spent / stats["requests"] * 1e6
                    rows[way].append((rps, per, stats["p99_us"] / 1000))
                    print(f"r{round_number + 1} {way:9} {rps:8,.0f} polls/s {per:6.1f} µs/poll")
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; `python -m bench.polls "
        f"--customers {args.customers} --rounds {args.rounds} --duration {args.duration}`. "
        f"One worker, {args.connections} connections, wrk on the same 2 cores; medians "
        "of the rounds (range).",
        "",
        "| answered by | polls/s | server CPU µs per poll | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for way, measured in rows.items():
        cells = []
        for column in range(3):
            values = [row[column] for row in measured]
            cells.append(
                f"{statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"
            )
        lines.append(f"| {way} | {' | '.join(cells)} |")
    ratio = [a[1] / p[1] for p, a in zip(rows["protocol"], rows["app"], strict=True)]
    lines += [
        "",
        f"CPU per poll, app / protocol, per round: {', '.join(f'{r:.2f}' for r in ratio)}.",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
