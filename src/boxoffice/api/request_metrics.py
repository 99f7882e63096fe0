"""Every request counted and timed, by route template, method and status.

The outermost middleware: it sees every answer, refusals by the other
middleware included, and a 500 from an exception that escapes them all. Its
labels are bounded whatever clients send: the route's template
(`/holds/{hold_id}/confirm`, never the raw path), `unmatched` for a path no
route serves, one of the methods routes use (any other is `other`), and the
status. It adds to a local histogram (`observability/metrics.py`): a dict
lookup and a bisect per request, nothing shared with other processes.
"""

from __future__ import annotations

import re
from time import perf_counter

from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxoffice.observability.metrics import HTTP_REQUESTS

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Outermost: times each request from its head to its last byte, and counts it."""

    def __init__(self, app: ASGIApp, *, routes_of: FastAPI) -> None:
        self.app = app
        self._fastapi = routes_of
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # unless an answer starts: an exception escaped every handler

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            method = scope["method"]
            HTTP_REQUESTS.observe(
                perf_counter() - started,
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
        app = self._fastapi
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
