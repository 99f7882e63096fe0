"""Driving `FastRoutes` straight, in front of an app that records what reaches it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from boxoffice.api.access import PRINCIPAL
from boxoffice.api.fast_routes import FastRoute, FastRoutes
from boxoffice.domain.access import Principal


@dataclass
class Passage:
    """What one request through the fast path sent back, and what went on past it."""

    scope: dict[str, Any]
    sent: list[dict[str, Any]] = field(default_factory=list)
    reached: list[bytes] = field(default_factory=list)  # bodies the inner app received


async def through_fast_path(
    app: FastAPI,
    fast: FastRoute[Any, Any],
    path: str,
    body: bytes,
    content_type: bytes,
    principal: Principal,
) -> Passage:
    """POST `body` to `path` through `FastRoutes([fast])` over an inner app that answers
    nothing, as the key check would hand it on (`principal` set)."""
    passage = Passage(
        {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": [(b"content-type", content_type)],
            "app": app,
            "client": ("127.0.0.1", 5000),
            "boxoffice.request_id": "r1",
            PRINCIPAL: principal,
        }
    )

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        passage.reached.append((await receive())["body"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        passage.sent.append(message)

    await FastRoutes(inner, [fast])(passage.scope, receive, send)
    return passage
