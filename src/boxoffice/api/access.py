"""Who is calling: the `Authorization: Bearer <key>` header, checked before anything else.

`KeyCheckMiddleware` reads the header straight from the ASGI scope and checks
it against the key ring (a dict lookup while the verdict is fresh), before
FastAPI routes, parses or validates anything: a request without a valid key
gets `401` first, whatever else is wrong with it, and no route's body
parsing runs for it. Only the public reads go through without a key; a key
that is sent must be valid even there, so a client with a broken key finds
out at once. A refusal never says why (unknown, revoked or expired) and never
echoes the key.

Routes then ask for the caller with `caller(request, operation)`, which checks
its role against `PERMISSIONS` (`domain/access.py`): a plain function, not a
FastAPI dependency, whose resolution costs more than a booking's own work
(docs/performance.md). Which paths are public is taken from the same table and
the app's routes when the app is made (`public_paths`). The OpenAPI document declares the scheme and
which operations need it (`document_security`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from boxoffice.api.fraud import watch_refusal
from boxoffice.api.problems import RETRY_AFTER_SECONDS, send_problem
from boxoffice.api.rate_limits import RateLimiter, refused_credential, route_class, send_too_many
from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.domain.access import OPEN_ACCESS, PUBLIC_OPERATIONS, Principal
from boxoffice.domain.errors import NEEDS_A_KEY, Unauthorized
from boxoffice.services.keys import KeyRing

log = structlog.get_logger("boxoffice.api")

PRINCIPAL = "boxoffice.principal"  # where the middleware leaves the caller in the scope

PUBLIC_STATE = "public_paths"  # the app's state: the paths of its public operations


def public_paths(app: FastAPI, routers: Sequence[APIRouter]) -> re.Pattern[str]:
    """The paths anyone may read without a key: those of the public operations in
    `PERMISSIONS` among the routes of `routers` (included as they are, no prefix), and
    the API's own documents. Made once, when the app is made."""
    paths = [
        route.path_format
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        and "GET" in (route.methods or ())
        and (route.operation_id or route.name) in PUBLIC_OPERATIONS
    ]
    documents = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    paths += [path for path in documents if path]
    patterns = sorted(
        "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", path.rstrip("/"))) + "/?"
        for path in paths
    )
    return re.compile("|".join(patterns))


def is_public(public: re.Pattern[str], method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and public.fullmatch(path) is not None


class KeyCheckMiddleware:
    """Leave the caller in the scope (None: the public), or answer 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        if state.settings.boxoffice_open_access:
            scope[PRINCIPAL] = OPEN_ACCESS
            await self.app(scope, receive, send)
            return
        sent = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                sent = value.decode("latin-1")
                break
        found: Principal | None = None
        if sent is not None:
            limiter: RateLimiter | None = state.rate_limiter
            scheme, _, token = sent.partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                keys: KeyRing = state.keys
                if limiter is not None and limiter.auth_blocked:
                    # Too many refused keys from this address: a key is not even looked up
                    # unless this process has found its id valid before (so one guesser
                    # behind a shared address cannot lock out keys in use).
                    blocked = limiter.auth_blocked_for(scope, time.monotonic())
                    if blocked is not None and not keys.vouches_for(token):
                        await send_too_many(scope, send, "auth", blocked)
                        return
                try:
                    found = await keys.principal(token, state.clock())
                except DatabaseUnavailable as exc:
                    # Below FastAPI, so its 503 handler cannot answer: a key looked up while
                    # the pool or the database cannot serve was a 500 (seen in `make onsale`,
                    # a storm of first requests with new keys).
                    await _unavailable(scope, send, exc)
                    return
            if found is None:
                if not await refused_credential(scope, send):
                    await _refuse(scope, send)
                return
        elif not is_public(getattr(state, PUBLIC_STATE), scope["method"], scope["path"]):
            await _refuse(scope, send)
            return
        scope[PRINCIPAL] = found
        await self.app(scope, receive, send)


async def _unavailable(scope: Scope, send: Send, exc: DatabaseUnavailable) -> None:
    log.warning("database_unavailable", path=scope.get("path"), error=type(exc.__cause__).__name__)
    await send_problem(
        scope,
        send,
        503,
        "service_unavailable",
        "The database is unavailable, so your key could not be checked; nothing was done. "
        "Retry shortly.",
        headers=[(b"retry-after", RETRY_AFTER_SECONDS.encode())],
    )


async def _refuse(scope: Scope, send: Send) -> None:
    watch_refusal(scope, "unauthorized")
    await send_problem(
        scope,
        send,
        401,
        "unauthorized",
        NEEDS_A_KEY,
        headers=[(b"www-authenticate", b'Bearer realm="boxoffice"')],
    )


def caller(request: Request, operation: str) -> Principal:
    """The caller, who must have a valid key whose role `PERMISSIONS` lets call `operation`."""
    found: Principal | None = request.scope.get(PRINCIPAL)
    if found is None:  # a route the middleware took for public: never, but never silently
        raise Unauthorized()
    found.require(operation)
    return found


PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def document_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the bearer scheme, and that every operation but the public ones needs it."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `bo_live_…`. Make one with `boxoffice keys create`.",
    }
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            responses = operation.setdefault("responses", {})
            if operation["operationId"] in PUBLIC_OPERATIONS:
                operation["security"] = [{}, {"bearerAuth": []}]
                declared = {"401": "A key was sent, and it is not a valid one (`unauthorized`)."}
            else:
                operation["security"] = [{"bearerAuth": []}]
                declared = {
                    "401": "No valid API key (`unauthorized`), with `WWW-Authenticate: Bearer`.",
                    "403": "The key's role may not do this (`forbidden`).",
                }
            if route_class(method.upper(), path) is not None:  # what the limiter charges
                declared["429"] = (
                    "The caller's rate limit is used up (`rate_limited`); retry after "
                    "`Retry-After`. See the `RateLimit` and `RateLimit-Policy` headers."
                )
            for status, description in declared.items():
                responses.setdefault(status, {"description": description, "content": PROBLEM})
    return schema
