"""The `boxoffice` command: serve the API, migrate the database, simulate a rush."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from boxoffice.config import Settings, get_settings
from boxoffice.db.database import Database, run_on_database
from boxoffice.db.errors import describe
from boxoffice.db.migrate import (
    SchemaOutOfDate,
    check_schema,
    current_revision,
    downgrade,
    head_revision,
    known_revision,
    upgrade,
)
from boxoffice.domain.errors import BoxofficeError
from boxoffice.observability.multiprocess import metrics_directory

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
keys_app = typer.Typer(
    help="API keys: make, list, revoke.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
app.add_typer(keys_app, name="keys")
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


def _with_database(settings: Settings, use: Callable[[Database], Awaitable[T]]) -> T:
    """Run `use` on a short-lived engine; an unreachable database is one line and exit 1."""
    try:
        return run_on_database(settings, use)
    except SchemaOutOfDate as error:
        _fail(str(error))
    except BoxofficeError:  # refused by the service, not a database failure: the caller says
        raise
    except Exception as error:
        _fail(f"cannot reach the {settings.dialect} database: {describe(error)}")


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
    # The web stack is imported here, not at the top: the other commands (check, audit
    # verify, keys, often run by scripts) start about 0.8 s sooner without it.
    import uvicorn

    from boxoffice.api.http_protocol import GuardedHttpToolsProtocol
    from boxoffice.api.security_headers import SECURITY_HEADERS
    from boxoffice.api.supervisor import run as run_server
    from boxoffice.booking.committer_process import shared_committer

    settings = _settings_or_exit()
    _with_database(settings, check_schema)
    config = uvicorn.Config(
        "boxoffice.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        access_log=access_log,
        # Behind a proxy, the client (rate limits, flags) is who the trusted proxy says.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        http=GuardedHttpToolsProtocol,
        headers=SECURITY_HEADERS,  # on every answer, written with the status line
        server_header=False,  # what runs the service is nobody's business
        timeout_keep_alive=settings.keep_alive_seconds,
        # SIGTERM: stop accepting, let requests in flight finish for this long, then stop.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    # Before any worker starts: each one finds them in its environment (GET /metrics,
    # and the committer's socket).
    with (
        metrics_directory(workers),
        shared_committer(shares_a_committer(settings, workers)) as committer,
    ):
        run_server(config, committer)


def shares_a_committer(settings: Settings, workers: int) -> bool:
    """Whether `serve --workers N` runs its group commit in one committer process."""
    return (
        workers > 1
        and settings.dialect == "postgresql"
        and settings.booking_strategy == "batched"
        and settings.booking_committer == "process"
    )


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the schema migrations (safe to repeat)."""
    settings = _settings_or_exit()
    before = _revision(settings)
    try:
        upgrade(settings.database_url, revision, pooler=settings.db_pooler)
    except Exception as error:
        _fail(f"migration failed: {describe(error)}")
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
        downgrade(settings.database_url, revision, pooler=settings.db_pooler)
    except Exception as error:
        _fail(f"migration failed: {describe(error)}")
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
    key: Annotated[
        str | None,
        typer.Option(
            envvar="BOXOFFICE_API_KEY",
            help="An organizer's or admin's API key (not needed with open access).",
            show_default=False,
        ),
    ] = None,
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
    passed = asyncio.run(
        run_simulation(target, plan, Console(), show_progress=show_progress, api_key=key)
    )
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


@app.command()
def check() -> None:
    """Verify every inventory invariant across the whole database.

    Per section: capacity == remaining + held + sold, held and sold match the holds and
    bookings behind them, and the audit trail rebuilds the counts; per hold and customer,
    that their rows agree. Prints each violation and exits 1 if there is any, else 0.
    """
    from boxoffice.services.inventory_check import check_inventory

    report = _with_database(_settings_or_exit(), check_inventory)
    out = Console()
    for violation in report.violations:
        out.print(f"VIOLATION {violation}", markup=False, highlight=False)
    if not report.ok:
        out.print(
            f"{len(report.violations)} violations in {report.sections} sections "
            f"and {report.holds} holds."
        )
        raise typer.Exit(1)
    out.print(f"Inventory consistent: {report.sections} sections, {report.holds} holds.")


@app.command()
def backup(
    path: Annotated[Path, typer.Argument(help="The backup file to write.")],
    force: Annotated[bool, typer.Option(help="Replace PATH if it exists.")] = False,
) -> None:
    """Write a consistent backup of the database to PATH; safe while servers run.

    SQLite: a copy of the file made with SQLite's online backup API. PostgreSQL: a
    pg_dump archive (custom format). Restore it with `boxoffice restore PATH`.
    """
    from boxoffice.db.backup import BackupRefused
    from boxoffice.db.backup import backup as back_up

    settings = _settings_or_exit()
    try:
        made = back_up(settings, path, force=force)
    except BackupRefused as error:
        _fail(str(error))
    console.print(
        f"Backed up the {made.dialect} database (schema {made.revision}) to {made.path} "
        f"({made.size:,} bytes)."
    )


@app.command()
def restore(
    path: Annotated[Path, typer.Argument(help="A file written by `boxoffice backup`.")],
    force: Annotated[
        bool,
        typer.Option(help="SQLite: replace the existing database file (servers stopped)."),
    ] = False,
) -> None:
    """Restore the backup at PATH into the database DATABASE_URL names; stop servers first.

    SQLite: replaces the database file in one rename (an existing one only with --force;
    never one a process has open). PostgreSQL: pg_restore into an empty database, in one
    transaction. Then run `boxoffice check`.
    """
    from boxoffice.db.backup import BackupRefused
    from boxoffice.db.backup import restore as put_back

    settings = _settings_or_exit()
    try:
        restored = put_back(settings, path, force=force)
    except BackupRefused as error:
        _fail(str(error))
    console.print(
        f"Restored {restored.path} into the {restored.dialect} database "
        f"(schema {restored.revision})."
    )
    head = head_revision()
    if not known_revision(restored.revision):
        console.print(
            f"Schema {restored.revision} is unknown to this version of Boxoffice (it needs "
            f"{head}): the backup was taken by a newer one; run that version on it."
        )
    elif restored.revision != head:
        console.print(
            f"This version needs schema {head}: run `boxoffice db upgrade`, then `boxoffice check`."
        )
    else:
        console.print("Next: `boxoffice check` verifies every inventory invariant in it.")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, organizer or customer.")],
    name: Annotated[str | None, typer.Option(help="A note: whose key, what for.")] = None,
    customer_id: Annotated[
        str | None, typer.Option(help="Customer keys: the customer it books for.")
    ] = None,
    organizer_id: Annotated[
        str | None,
        typer.Option(help="Organizer keys: an existing organizer's id (a second key for it)."),
    ] = None,
    expires: Annotated[
        datetime | None,
        typer.Option(
            help="When it stops working (ISO 8601; UTC unless a zone is given).",
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"],
        ),
    ] = None,
) -> None:
    """Make an API key. The key is printed alone on the last line, this once."""
    from boxoffice.services.keys import create_key

    settings = _settings_or_exit()
    expires_at = None if expires is None else _aware(expires)
    try:
        made = _with_database(
            settings,
            lambda database: create_key(
                database,
                role=role,
                now=datetime.now(UTC),
                name=name,
                customer_id=customer_id,
                organizer_id=organizer_id,
                expires_at=expires_at,
            ),
        )
    except BoxofficeError as error:
        _fail(error.detail)
    console.print(f"Made {made.key.role} key {made.key.id}. It is shown once: keep it now.")
    print(made.token)


@keys_app.command("list")
def keys_list() -> None:
    """Every key (never a secret), revoked ones included."""
    from rich.table import Table

    from boxoffice.services.keys import list_keys

    settings = _settings_or_exit()
    found = _with_database(settings, list_keys)
    table = Table()
    table.add_column("id", no_wrap=True, min_width=16)  # whole: `keys revoke` wants it
    for heading in ("role", "name", "customer", "organizer", "created", "expires", "revoked"):
        table.add_column(heading)
    for key in found:
        table.add_row(
            key.id,
            key.role,
            key.name or "",
            key.customer_id or "",
            key.organizer_id or "",
            key.created_at.isoformat(timespec="seconds"),
            "" if key.expires_at is None else key.expires_at.isoformat(timespec="seconds"),
            "" if key.revoked_at is None else key.revoked_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from keys list).")],
) -> None:
    """Revoke a key: every server refuses it within KEY_CACHE_SECONDS."""
    from boxoffice.domain.errors import KeyNotFound
    from boxoffice.services.keys import revoke_key

    settings = _settings_or_exit()
    try:
        key = _with_database(
            settings, lambda database: revoke_key(database, key_id, datetime.now(UTC))
        )
    except KeyNotFound as error:
        _fail(error.detail)
    console.print(f"Revoked key {key.id} ({key.role}).")


@keys_app.command("bootstrap")
def keys_bootstrap() -> None:
    """On a database with no key at all, make the first admin key and print it; else nothing.

    `make run` calls it before serving, so the first start shows the key once.
    """
    from boxoffice.services.keys import count_keys, create_key

    settings = _settings_or_exit()
    if settings.boxoffice_open_access:
        return
    if _with_database(settings, count_keys) > 0:
        return
    made = _with_database(
        settings,
        lambda database: create_key(
            database, role="admin", now=datetime.now(UTC), name="first admin key"
        ),
    )
    console.print(
        "[bold]The first admin key[/bold] (shown this once: keep it now). Make more with\n"
        "  boxoffice keys create --role organizer --name 'Acme Live'\n"
        "  boxoffice keys create --role customer --customer-id c1\n"
        "or POST /keys with this key."
    )
    print(made.token)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
