"""Every error leaves as `application/problem+json` (RFC 9457), mapped here and only here.

| raised                                   | status | code                  |
|------------------------------------------|--------|-----------------------|
| RequestValidationError, InvalidRequest   | 400    | validation_error      |
| InsufficientSeats                        | 400    | insufficient_seats    |
| Unauthorized (+ WWW-Authenticate)        | 401    | unauthorized          |
| Forbidden (AdmissionRequired,            | 403    | forbidden,            |
|   AdmissionInvalid)                      |        | admission_required, … |
| NotFound (QueueTicketInvalid), unknown   | 404    | not_found, …          |
|   route                                  |        |                       |
| Conflict (HoldExpired, HoldNotActive,    | 409    | hold_expired, …       |
|   CustomerLimitExceeded, ActiveHoldLimit,|        |                       |
|   IdempotencyInProgress + Retry-After)   |        |                       |
| IdempotencyKeyReused                     | 422    | idempotency_key_reused|
| HoldChurnLimit, PollTooSoon              | 429    | hold_churn_limit,     |
|   (+ Retry-After)                        |        | poll_too_soon         |
| a rate limit (api/rate_limits.py)        | 429    | rate_limited          |
| wrong method                             | 405    | method_not_allowed    |
| body over MAX_BODY_BYTES                 | 413    | payload_too_large     |
| Overloaded (+ Retry-After)               | 503    | overloaded            |
| DatabaseUnavailable (+ Retry-After)      | 503    | service_unavailable   |
| anything else                            | 500    | internal_error        |

Bodies never carry a stack trace or echo the rejected input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope, Send

from boxoffice.api.fraud import watch_refusal
from boxoffice.api.request_ids import request_id_header
from boxoffice.api.schemas import FieldError, Problem
from boxoffice.db.errors import DatabaseUnavailable, Overloaded
from boxoffice.domain.errors import (
    BoxofficeError,
    Conflict,
    Forbidden,
    HoldChurnLimit,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InsufficientSeats,
    InvalidRequest,
    NotFound,
    PollTooSoon,
    Unauthorized,
)
from boxoffice.observability.metrics import REFUSALS

PROBLEM_MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = "1"

log = structlog.get_logger("boxoffice.api")

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

_HTTP_CODES = {
    400: "validation_error",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem_body(status: int, code: str, detail: str, *, instance: str | None) -> bytes:
    """A serialized problem document, for places that answer below FastAPI."""
    REFUSALS.inc((code,))
    document = Problem(
        title=HTTPStatus(status).phrase, status=status, detail=detail, code=code, instance=instance
    )
    return json.dumps(document.body(), separators=(",", ":")).encode()


async def send_problem(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    detail: str,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with a problem document straight on ASGI, for middleware below FastAPI."""
    body = problem_body(status, code, detail, instance=scope.get("path"))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def problem(
    request: Request,
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    REFUSALS.inc((code,))
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=code,
        instance=request.url.path,
        **extensions,
    )
    return ProblemResponse(body.body(), status_code=status, headers=headers)


def _status_of(error: BoxofficeError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, InvalidRequest | InsufficientSeats):
        return 400
    if isinstance(error, Unauthorized):
        return 401
    if isinstance(error, Forbidden):
        return 403
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, IdempotencyKeyReused):
        return 422
    if isinstance(error, HoldChurnLimit | PollTooSoon):
        return 429
    return 500


def _field_errors(errors: Sequence[Any]) -> list[FieldError]:
    found = []
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "invalid JSON")
            position = error.get("loc", ("body", 0))[-1]
            found.append(
                FieldError(field="body", message=f"Malformed JSON: {reason} at {position}.")
            )
            continue
        location = [str(part) for part in error.get("loc", ())]
        if location and location[0] in {"body", "query", "path", "header"}:
            location = location[1:]
        found.append(
            FieldError(field=".".join(location) or "body", message=str(error.get("msg", "")))
        )
    return found


async def _on_domain_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, BoxofficeError)
    watch_refusal(request.scope, exc.code)
    headers = (
        {"Retry-After": RETRY_AFTER_SECONDS}
        if isinstance(exc, IdempotencyInProgress)
        else {"Retry-After": str(exc.retry_after_seconds)}
        if isinstance(exc, HoldChurnLimit | PollTooSoon)
        else {"WWW-Authenticate": 'Bearer realm="boxoffice"'}
        if isinstance(exc, Unauthorized)
        else None
    )
    return problem(request, _status_of(exc), exc.code, exc.detail, headers, **exc.extensions())


async def _on_validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc.errors())
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5]) or "Invalid request."
    content_type = request.headers.get("content-type", "")
    about_body = any(error.get("loc", ("",))[0] == "body" for error in exc.errors())
    if about_body and request.method in {"POST", "PUT", "PATCH"} and "json" not in content_type:
        detail = "Send the body as JSON with 'Content-Type: application/json'. " + detail
    return problem(request, 400, "validation_error", detail, errors=errors)


async def _on_http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, "error" if status < 500 else "internal_error")
    if status == 404:
        detail = f"No route matches {request.url.path}."
    elif status == 405:
        detail = f"Method {request.method} is not allowed on {request.url.path}."
    elif status == 413:
        detail = (
            f"The request body is larger than {request.app.state.settings.max_body_bytes} bytes."
        )
    elif status == 400:
        detail = "The request body is not valid UTF-8 JSON."
    elif status == 408:
        detail = (
            "The request body stopped arriving for "
            f"{request.app.state.settings.body_timeout_seconds:g} s."
        )
    else:
        detail = str(exc.detail)
    headers = dict(exc.headers or {})
    if status == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return problem(request, status, code, detail, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette lists only the first route's)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _on_overloaded(request: Request, exc: Exception) -> ProblemResponse:
    return problem(
        request,
        503,
        "overloaded",
        "Too many requests are waiting for this event's seats; this one was not started, "
        "so nothing was written. Retry shortly.",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _on_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    log.warning("database_unavailable", path=request.url.path, error=type(exc.__cause__).__name__)
    return problem(
        request,
        503,
        "service_unavailable",
        "The database is unavailable; nothing was half-written. Retry shortly, with the "
        "same Idempotency-Key.",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _on_unexpected(request: Request, exc: Exception) -> ProblemResponse:
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    return problem(
        request,
        500,
        "internal_error",
        "An unexpected error occurred.",
        # Sent from outside every middleware: RequestIdMiddleware adds neither header.
        headers={**request_id_header(request.scope), "Cache-Control": "no-store"},
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BoxofficeError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(DatabaseUnavailable, _on_unavailable)
    app.add_exception_handler(Overloaded, _on_overloaded)  # the more specific class wins
    app.add_exception_handler(Exception, _on_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations for the error statuses an operation can return."""
    descriptions = {
        400: "Invalid input (`validation_error`) or, for bookings, `insufficient_seats`.",
        404: "Not found (`not_found`).",
        403: "The key's role may not do this (`forbidden`) or, while the event's waiting "
        "room is on, no valid Admission-Token (`admission_required`, `admission_invalid`).",
        409: "Conflict: `hold_expired`, `hold_not_active`, `customer_limit_exceeded`, "
        "`active_hold_limit`, `queue_not_open`, or `idempotency_in_progress` (retry after "
        "`Retry-After`).",
        413: "Body larger than MAX_BODY_BYTES (`payload_too_large`).",
        422: "The Idempotency-Key was used before with a different request "
        "(`idempotency_key_reused`).",
        429: "Too many requests (`rate_limited`), for holds too many given up in the "
        "last hour (`hold_churn_limit`), for queue tickets a poll before its "
        "`pollAfterSeconds` (`poll_too_soon`); retry after `Retry-After`.",
        500: "Unexpected error (`internal_error`).",
        503: "Database unavailable (`service_unavailable`) or, for inventory changes, the "
        "booking queue full for longer than BOOKING_QUEUE_TIMEOUT_MS (`overloaded`); retry "
        "after `Retry-After`.",
    }
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, HTTPStatus(status).phrase),
        }
        for status in (*statuses, 500)
    }


def move_errors_to_problem_media_type(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare error bodies as problem+json and drop FastAPI's unused 422 responses."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]  # FastAPI's own; our validation errors are 400s
            for status, response in responses.items():
                content = response.get("content", {})
                if int(status) >= 400 and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
                if status in ("503", "409"):
                    response.setdefault("headers", {})["Retry-After"] = {
                        "description": "Seconds to wait before retrying.",
                        "schema": {"type": "string"},
                    }
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema
