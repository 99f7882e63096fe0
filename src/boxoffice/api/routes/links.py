"""RFC 8288 `Link` headers for paginated lists, so the list bodies stay plain arrays."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

LINK_HEADER_DOC: dict[str, Any] = {
    "Link": {
        "description": 'Present when there is a next page: `<url>; rel="next"`.',
        "schema": {"type": "string"},
    }
}


def set_next_link(request: Request, response: Response, next_cursor: str | None) -> None:
    if next_cursor is None:
        return
    url = request.url.include_query_params(cursor=next_cursor)
    response.headers["Link"] = f'<{url}>; rel="next"'
