"""The `boxoffice` command: serve the API, migrate the database, simulate a rush."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from boxoffice.config import get_settings

app = typer.Typer(
    help="Boxoffice: a ticket-booking API that never sells a seat twice.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface (default: HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PORT or 4521).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes.")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Serve the HTTP API (the schema must be migrated: `boxoffice db upgrade`)."""
    # Workers are separate processes that read their settings from the environment.
    if host is not None:
        os.environ["HOST"] = host
    if port is not None:
        os.environ["PORT"] = str(port)
    get_settings.cache_clear()
    settings = get_settings()
    uvicorn.run(
        "boxoffice.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        access_log=access_log,
        proxy_headers=False,
    )


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the schema migrations (safe to repeat)."""
    from boxoffice.db.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url, revision)
    console.print(f"Database schema is at {revision} ({settings.dialect}).")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base' for none.")],
) -> None:
    """Revert the schema to an earlier revision (drops what later revisions added)."""
    from boxoffice.db.migrate import downgrade

    settings = get_settings()
    downgrade(settings.database_url, revision)
    console.print(f"Database schema is at {revision} ({settings.dialect}).")


@app.command()
def simulate(
    url: Annotated[
        str, typer.Option(help="Base URL of a running server.")
    ] = "http://127.0.0.1:4521",
    requests: Annotated[int, typer.Option(min=1, max=1_000_000, help="Booking requests.")] = 20,
    capacity: Annotated[int, typer.Option(min=1, max=1_000_000, help="Seats per section.")] = 5,
    concurrency: Annotated[
        int, typer.Option(min=1, max=1000, help="Requests in flight at once.")
    ] = 20,
    qty_min: Annotated[int, typer.Option(min=1, help="Smallest qty per request.")] = 1,
    qty_max: Annotated[int, typer.Option(min=1, help="Largest qty per request.")] = 1,
    events: Annotated[int, typer.Option(min=1, max=100, help="Events to create.")] = 1,
    sections: Annotated[int, typer.Option(min=1, max=100, help="Sections per event.")] = 1,
    seed: Annotated[int | None, typer.Option(help="Random seed, to replay a run.")] = None,
    progress: Annotated[bool | None, typer.Option(help="Show a progress bar.")] = None,
) -> None:
    """Race concurrent clients for a few seats, then check nothing was oversold or leaked."""
    from boxoffice.simulation import SimulationPlan, run_simulation

    if qty_max < qty_min:
        raise typer.BadParameter("--qty-max must be at least --qty-min")
    plan = SimulationPlan(
        requests=requests,
        capacity=capacity,
        concurrency=concurrency,
        qty_min=qty_min,
        qty_max=qty_max,
        events=events,
        sections=sections,
        seed=seed,
    )
    show_progress = progress if progress is not None else requests >= 500
    passed = asyncio.run(run_simulation(url, plan, Console(), show_progress=show_progress))
    raise typer.Exit(0 if passed else 1)
