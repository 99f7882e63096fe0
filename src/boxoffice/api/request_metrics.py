"""Every request counted and timed, by route template, method and status.

`RequestIdMiddleware`, the outermost middleware, hands each request to
`RequestCounter.count` once it is answered: it sees every answer, refusals by
the other middleware included, and a 500 from an exception that escapes them
all. (A middleware of its own cost a no-op request 14,900 instructions, 2.6 %,
against 8,400 this way, for a second wrapper around every `send`:
docs/performance.md.) The labels are
bounded whatever clients send: the route's template (`/holds/{hold_id}/confirm`,
never the raw path), `unmatched` for a path no route serves, one of the methods
routes use (any other is `other`), and the status. It adds to a local histogram
(`observability/metrics.py`): a dict lookup and a bisect per request, nothing
shared with other processes.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import Scope

from boxoffice.observability.metrics import HTTP_REQUESTS

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestCounter:
    """Counts answered requests of one app, by route template, method and status."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    def count(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")  # set by the router on a match
        method = scope["method"]
        HTTP_REQUESTS.observe(
            seconds,
            (
                route.path if route is not None else self._template_of(scope["path"]),
                method if method in _METHODS else "other",
                status,  # made a string at the flush, not per request
            ),
        )

    def _template_of(self, path: str) -> str:
        """The template of a path no route was matched for: refused before routing (401,
        429, 413), a page of the documentation, or a path nothing serves."""
        if self._templates is None:
            self._templates = self._known_templates()
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        return UNMATCHED

    def _known_templates(self) -> list[tuple[re.Pattern[str], str]]:
        app = self._app
        templates = list(app.openapi()["paths"])
        templates += [
            url
            for url in (
                app.openapi_url,
                app.docs_url,
                app.redoc_url,
                app.swagger_ui_oauth2_redirect_url,
            )
            if url
        ]
        return [(compile_path(template)[0], template) for template in templates]
