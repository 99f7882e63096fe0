"""What routes need, as `Annotated` aliases, taken from the app's state.

Every dependency is `async def` on purpose: FastAPI runs plain `def`
dependencies in a thread pool, and that hop cost more than the booking itself
under load (see docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request

from boxoffice.booking import Booker
from boxoffice.config import Settings
from boxoffice.db.database import Database
from boxoffice.services.clock import Clock
from boxoffice.services.idempotency import MAX_KEY_LENGTH
from boxoffice.services.pages import MAX_CURSOR_LENGTH, Cursor, SeqCursor, check_limit


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DatabaseDep = Annotated[Database, Depends(_database)]
SettingsDep = Annotated[Settings, Depends(_settings)]


C = TypeVar("C")

LimitQuery = Annotated[
    int | None,
    # Published with the configured sizes by create_app's openapi(); checked in PageParams.
    Query(description="Page size: DEFAULT_PAGE_SIZE by default, at most MAX_PAGE_SIZE."),
]
CursorQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        description='Opaque cursor from the previous page\'s `Link: rel="next"`.',
    ),
]


@dataclass(frozen=True, slots=True)
class PageParams(Generic[C]):
    """`?limit=&cursor=`, checked against the configured page size."""

    limit: int
    cursor: C | None

    @classmethod
    def parse(
        cls, settings: Settings, limit: int | None, cursor: str | None, decode: Callable[[str], C]
    ) -> PageParams[C]:
        size = settings.default_page_size if limit is None else limit
        check_limit(size, settings.max_page_size)
        return cls(size, None if cursor is None else decode(cursor))


async def _page_params(
    settings: SettingsDep, limit: LimitQuery = None, cursor: CursorQuery = None
) -> PageParams[Cursor]:
    return PageParams.parse(settings, limit, cursor, Cursor.decode)


async def _seq_page_params(
    settings: SettingsDep, limit: LimitQuery = None, cursor: CursorQuery = None
) -> PageParams[SeqCursor]:
    """For lists read oldest first (the audit trail)."""
    return PageParams.parse(settings, limit, cursor, SeqCursor.decode)


PageDep = Annotated[PageParams[Cursor], Depends(_page_params)]
SeqPageDep = Annotated[PageParams[SeqCursor], Depends(_seq_page_params)]


async def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _booker(request: Request) -> Booker:
    booker: Booker = request.app.state.booker
    return booker


ClockDep = Annotated[Clock, Depends(_clock)]
BookerDep = Annotated[Booker, Depends(_booker)]


def header(request: Request, name: bytes) -> str | None:
    """A request header's value, read straight from the ASGI scope (`name` in lower case).

    Not a FastAPI `Header()` parameter: FastAPI inspects such a parameter's type
    annotation again on every request, which cost a no-op route 13 % of its
    instructions (83,000 of 649,000 per request, counted with callgrind).
    """
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def idempotency_key(request: Request) -> str | None:
    return header(request, b"idempotency-key")


# What `idempotency_key` reads, declared for the OpenAPI document (`openapi_extra`).
IDEMPOTENCY_KEY_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            "description": "Makes a retry safe: a request with a key already answered gets "
            "that answer again and changes nothing (1 to 255 printable ASCII characters; "
            "kept IDEMPOTENCY_TTL_HOURS).",
        }
    ]
}
