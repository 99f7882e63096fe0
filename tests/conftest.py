"""Shared fixtures: a throwaway PostgreSQL cluster, and a fresh database per test on both
SQLite and PostgreSQL.

`database_url` is parametrized over both databases; every test that uses it
(directly or through `database` / `client`) runs twice. Set
BOXOFFICE_TEST_DATABASES=sqlite to run the SQLite half only.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from boxoffice.api.app import create_app
from boxoffice.config import Settings, get_settings
from boxoffice.db.database import Database
from boxoffice.db.migrate import upgrade
from boxoffice.observability.logging import configure_logging
from tests.support.keys import bearer, key_material_in
from tests.support.postgres import ThrowawayPostgres

DATABASES = [
    name.strip()
    for name in os.environ.get("BOXOFFICE_TEST_DATABASES", "sqlite,postgresql").split(",")
    if name.strip()
]


@pytest.fixture(autouse=True)
def production_logging() -> None:
    """Log as `boxoffice serve` does (in-process apps are built without configuring it), so
    the key-material check below watches the renderer users really get; into this test's
    captured stderr."""
    configure_logging("INFO", "console")


@pytest.fixture(autouse=True)
def settings_read_afresh() -> Iterator[None]:
    """`get_settings()` reads the environment once per process: whatever a test built that
    read it (an app without settings, the server's protocol) must not hand the next test
    this one's environment."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres().start()
    try:
        yield cluster
    finally:
        cluster.stop(wait_for_removal=False)


@pytest.fixture(scope="session")
def postgres_template(postgres: ThrowawayPostgres) -> str:
    """A migrated database that each test copies (CREATE DATABASE … TEMPLATE)."""
    url = postgres.create_database("boxoffice_template")
    upgrade(url)
    return "boxoffice_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated, empty database of each kind."""
    return fresh_database_url(request, request.param, tmp_path / "boxoffice.db")


def fresh_database_url(request: pytest.FixtureRequest, kind: str, path: Path) -> str:
    """Another freshly migrated, empty database of `kind` (SQLite at `path`)."""
    if kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    postgres: ThrowawayPostgres = request.getfixturevalue("postgres")
    template_name: str = request.getfixturevalue("postgres_template")
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    return postgres.url(name)


@pytest.fixture
def booking_strategy() -> str:
    """The default booking path; modules that test both parametrize this name."""
    return "batched"


@pytest.fixture
def sqlite_writer() -> str:
    """Where SQLite's group commits run; tests of both writers parametrize this name."""
    return "process"


@pytest.fixture
def settings(database_url: str, booking_strategy: str, sqlite_writer: str) -> Settings:
    return Settings(
        database_url=database_url,
        booking_strategy=booking_strategy,
        sqlite_writer=sqlite_writer,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    db = Database.from_settings(settings)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def client(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process, lifespan included, with an admin key
    (tests of who may do what are in tests/api/test_access.py)."""
    app = create_app(settings, database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = await bearer(database)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as http:
            yield http


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[pytest.TestReport]:
    """Fail any test whose captured output (logs included) carries a key's secret: nothing
    the service logs may leak a key, and this watches the whole suite for it."""
    report: pytest.TestReport = yield
    captured = "\n".join(
        content for name, content in report.sections if name.startswith("Captured")
    )
    leaked = key_material_in(captured)
    if leaked and report.outcome != "failed":
        report.outcome = "failed"
        report.longrepr = f"key material in the captured output or logs: {leaked}"
    return report
