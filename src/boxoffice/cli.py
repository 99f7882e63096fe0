"""The `boxoffice` command: serve the API, migrate the database, simulate a rush."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, NoReturn

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from boxoffice.config import Settings, get_settings

app = typer.Typer(
    help="Boxoffice: a ticket-booking API that never sells a seat twice.",
    no_args_is_help=True,
    # Locals can hold DATABASE_URL and its password: never print them.
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(
    help="Database schema.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
app.add_typer(db_app, name="db")
console = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _settings_or_exit() -> Settings:
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as error:
        _fail(f"invalid configuration: {error}")


def _describe(error: BaseException) -> str:
    """One line about a failure, without the URL (and so without its password)."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"


async def _schema_state(settings: Settings) -> tuple[str | None, str]:
    from boxoffice.db.database import Database
    from boxoffice.db.migrate import current_revision, head_revision

    database = Database.from_settings(settings)
    try:
        return await current_revision(database), head_revision()
    finally:
        await database.dispose()


def _schema_or_exit(settings: Settings) -> tuple[str | None, str]:
    try:
        return asyncio.run(_schema_state(settings))
    except Exception as error:
        _fail(f"cannot reach the {settings.dialect} database: {_describe(error)}")


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
    settings = _settings_or_exit()
    current, head = _schema_or_exit(settings)
    if current != head:
        _fail(
            f"the database schema is at {current or 'nothing'}, this version needs {head}: "
            "run `boxoffice db upgrade` first (make run does)"
        )
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

    settings = _settings_or_exit()
    before, _ = _schema_or_exit(settings)
    try:
        upgrade(settings.database_url, revision)
    except Exception as error:
        _fail(f"migration failed: {_describe(error)}")
    after, _ = _schema_or_exit(settings)
    if before == after:
        console.print(f"Database schema already at {after} ({settings.dialect}); nothing to do.")
    else:
        console.print(
            f"Database schema upgraded from {before or 'nothing'} to {after} ({settings.dialect})."
        )


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base' for none.")],
) -> None:
    """Revert the schema to an earlier revision (drops what later revisions added)."""
    from boxoffice.db.migrate import downgrade

    settings = _settings_or_exit()
    try:
        downgrade(settings.database_url, revision)
    except Exception as error:
        _fail(f"migration failed: {_describe(error)}")
    after, _ = _schema_or_exit(settings)
    console.print(f"Database schema is at {after or 'nothing'} ({settings.dialect}).")


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
    target = url or f"http://127.0.0.1:{_settings_or_exit().port}"
    passed = asyncio.run(run_simulation(target, plan, Console(), show_progress=show_progress))
    raise typer.Exit(0 if passed else 1)
