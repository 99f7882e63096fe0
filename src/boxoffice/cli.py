"""The `boxoffice` command: serve the API, migrate the database, simulate a rush."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, NoReturn, TypeVar

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from boxoffice.config import Settings, get_settings
from boxoffice.db.database import Database
from boxoffice.db.migrate import (
    SchemaOutOfDate,
    check_schema,
    current_revision,
    downgrade,
    upgrade,
)

T = TypeVar("T")

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
audit_app = typer.Typer(
    help="The audit trail.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
app.add_typer(audit_app, name="audit")
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


def _with_database(settings: Settings, use: Callable[[Database], Awaitable[T]]) -> T:
    """Run `use` on a short-lived engine; an unreachable database is one line and exit 1."""

    async def run() -> T:
        database = Database.from_settings(settings)
        try:
            return await use(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except SchemaOutOfDate as error:
        _fail(str(error))
    except Exception as error:
        _fail(f"cannot reach the {settings.dialect} database: {_describe(error)}")


def _revision(settings: Settings) -> str | None:
    return _with_database(settings, current_revision)


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
    _with_database(settings, check_schema)
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
    settings = _settings_or_exit()
    before = _revision(settings)
    try:
        upgrade(settings.database_url, revision)
    except Exception as error:
        _fail(f"migration failed: {_describe(error)}")
    after = _revision(settings)
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
    settings = _settings_or_exit()
    try:
        downgrade(settings.database_url, revision)
    except Exception as error:
        _fail(f"migration failed: {_describe(error)}")
    after = _revision(settings)
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


@audit_app.command("verify")
def audit_verify() -> None:
    """Rebuild every section's counts from the audit trail and compare them with the rows.

    Prints each section whose stored remaining/held/sold differ from the trail's and
    exits 1 if there is any; exits 0 when every section agrees.
    """
    from boxoffice.services.audit import verify

    settings = _settings_or_exit()
    checked, mismatches = _with_database(settings, verify)
    out = Console()
    for mismatch in mismatches:
        stored = "/".join(map(str, mismatch.stored))
        rebuilt = "/".join(map(str, mismatch.rebuilt))
        out.print(
            f"MISMATCH section {mismatch.section_id}: remaining/held/sold "
            f"stored {stored}, audit trail {rebuilt}"
        )
    if mismatches:
        out.print(f"{len(mismatches)} of {checked} sections disagree with the audit trail.")
        raise typer.Exit(1)
    out.print(f"All {checked} sections agree with the audit trail.")
