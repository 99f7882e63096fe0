"""Apply and inspect the schema migrations from code (the CLI and the tests use this)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from boxoffice.db.database import Database, Pooler

SCRIPT_LOCATION = "boxoffice.db:migrations"


def alembic_config(database_url: str, pooler: Pooler = "none") -> Config:
    """An Alembic config for `database_url`, independent of the working directory."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["database_url"] = database_url
    config.attributes["db_pooler"] = pooler  # DB_POOLER: how env.py connects
    return config


def upgrade(database_url: str, revision: str = "head", *, pooler: Pooler = "none") -> None:
    """Bring the schema to `revision`; safe to run when it is already there.

    Runs Alembic, which starts its own event loop: call it outside a running loop.
    """
    command.upgrade(alembic_config(database_url, pooler), revision)


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


def known_revision(revision: str) -> bool:
    """Whether this version's migrations include `revision` (a newer one's may not)."""
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


async def current_revision(database: Database) -> str | None:
    """The revision the database is at, or None when it was never migrated."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with database.engine.connect() as conn:
        return await conn.run_sync(read)


def downgrade(database_url: str, revision: str, *, pooler: Pooler = "none") -> None:
    """Take the schema back to `revision` ("base" removes every table)."""
    command.downgrade(alembic_config(database_url, pooler), revision)


class SchemaOutOfDate(RuntimeError):
    """The database was not migrated to the revision this code expects."""


async def check_schema(database: Database) -> None:
    """Raise `SchemaOutOfDate` unless the database is at this code's head revision."""
    current, head = await current_revision(database), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at {current or 'nothing'}, this version needs {head}: "
            "run `boxoffice db upgrade` first (make run does)"
        )
