"""What routes need, as `Annotated` aliases, taken from the app's state.

Every dependency is `async def` on purpose: FastAPI runs plain `def`
dependencies in a thread pool, and that hop cost more than the booking itself
under load (see docs/performance.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.services.pages import MAX_CURSOR_LENGTH, Cursor, check_limit


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DatabaseDep = Annotated[Database, Depends(_database)]
SettingsDep = Annotated[Settings, Depends(_settings)]


class PageParams:
    """`?limit=&cursor=`, checked against the configured page size."""

    def __init__(self, limit: int, cursor: Cursor | None) -> None:
        self.limit = limit
        self.cursor = cursor


async def _page_params(
    settings: SettingsDep,
    limit: Annotated[
        int | None,
        Query(ge=1, le=1000, description="Page size: default 100, at most MAX_PAGE_SIZE (1000)."),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR_LENGTH,
            description='Opaque cursor from the previous page\'s `Link: rel="next"`.',
        ),
    ] = None,
) -> PageParams:
    size = settings.default_page_size if limit is None else limit
    check_limit(size, settings.max_page_size)
    return PageParams(size, None if cursor is None else Cursor.decode(cursor))


PageDep = Annotated[PageParams, Depends(_page_params)]
