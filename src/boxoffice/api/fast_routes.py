"""A sale's hot requests answered below FastAPI: book, hold, confirm, join the line.

These few POSTs are nearly all of a sale's writes, and FastAPI's routing,
dependency solving, body parsing and response validation cost each more than
its own work (docs/performance.md). `FastRoutes`, the innermost middleware,
answers them instead:

- after the key check, the rate limits and the body limit, which ran as for
  any request, and inside the request id and the counting;
- with the route's own work: each route module declares a `FastRoute` whose
  `answer` its FastAPI route calls too, so the two cannot drift apart;
- refusals answered by the app's own exception handlers, so a problem is the
  route's, byte for byte (tests compare every answer with an app without this);
- a body it does not read with certainty (not `application/json`, empty where
  the route needs one, invalid for the route's model) goes on to the route,
  replayed whole, which answers it as it always did (its 400 names the field).
  So does a client gone before its body arrived.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar, cast

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

B = TypeVar("B", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response] | Response]
JSON_CONTENT = (b"content-type", b"application/json")


@dataclass(frozen=True, eq=False)
class FastRoute(Generic[B, M]):
    """One route answered below FastAPI: what it matches, reads, does and answers."""

    router: APIRouter  # the module's router, where the route of `name` is
    name: str  # the FastAPI route's name: its answers are counted under its template
    path: re.Pattern[str]  # POST paths it answers; its groups are the path's parameters
    body: type[B]
    body_required: bool
    # The route's own work, shared with its FastAPI route: the body (None when empty and
    # not required) and the path's parameters, to the answer's model.
    answer: Callable[[Request, B | None, tuple[str, ...]], Awaitable[M]]
    status: int = 201
    location: Callable[[M], str] | None = None

    @cached_property
    def route(self) -> BaseRoute:
        """The route it answers for, as the router would have put it in the scope."""
        return route_named(self.router, self.name)

    def read(self, scope: Scope, body: bytes) -> tuple[bool, B | None]:
        """Whether the body was read with certainty, and what it says (None when empty)."""
        if not body:
            return not self.body_required, None
        if not is_json(scope):
            return False, None
        try:
            return True, self.body.model_validate_json(body)
        except ValidationError:
            return False, None

    def headers(self, model: M, content: bytes) -> list[tuple[bytes, bytes]]:
        # In the order FastAPI's JSONResponse sends them.
        headers = [(b"content-length", str(len(content)).encode()), JSON_CONTENT]
        if self.location is not None:
            headers.append((b"location", self.location(model).encode()))
        return headers


def with_body(
    work: Callable[[Request, B], Awaitable[M]],
) -> Callable[[Request, B | None, tuple[str, ...]], Awaitable[M]]:
    """The `answer` of a route whose body is required and whose path has no parameters."""

    async def answer(request: Request, body: B | None, _: tuple[str, ...]) -> M:
        assert body is not None  # required: an empty body goes on to the route
        return await work(request, body)

    return answer


def route_named(router: APIRouter, name: str) -> BaseRoute:
    """`router`'s route `name`: a request a fast path answers is counted under its
    template, as the router would have set it (api/request_metrics.py). A walk of the
    router's routes: callers keep what it finds."""
    return next(route for route in router.routes if getattr(route, "name", None) == name)


class FastRoutes:
    """Answers its `routes` below FastAPI (see the module's docstring); the rest go on."""

    def __init__(self, app: ASGIApp, routes: Sequence[FastRoute[Any, Any]]) -> None:
        self.app = app
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        for fast in self.routes:
            matched = fast.path.fullmatch(path)
            if matched is not None:
                await self._answer(fast, matched.groups(), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(
        self,
        fast: FastRoute[Any, Any],
        params: tuple[str, ...],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        messages: list[Message] = []
        replay = replaying(messages, receive)
        try:
            body = await whole_body(receive, messages)
            read, parsed = (False, None) if body is None else fast.read(scope, body)
            if not read:
                await self.app(scope, replay, send)
                return
            model = await fast.answer(Request(scope, replay), parsed, params)
        except Exception as error:
            handler = handler_for(scope["app"], error)
            if handler is None:
                raise  # on up to the server-error handler, as from any route
            try:
                response = await answered_by(handler, Request(scope, replay), error)
                if response is not None:  # as Starlette: a handler may send nothing
                    await response(scope, replay, send)
            finally:
                # As Starlette does: a refusal handed to several waiters (a batch's, a
                # coalesced read's) must not keep this request's frames alive.
                error.__traceback__ = None
            return
        scope["route"] = fast.route
        content = model.__pydantic_serializer__.to_json(model)
        await send(
            {
                "type": "http.response.start",
                "status": fast.status,
                "headers": fast.headers(model, content),
            }
        )
        await send({"type": "http.response.body", "body": content})


def is_json(scope: Scope) -> bool:
    """Whether the request says its body is JSON (`application/json`, any parameters)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";")[0].strip().lower() == b"application/json")
    return False


async def whole_body(receive: Receive, messages: list[Message]) -> bytes | None:
    """The request's body, every message kept for a replay; None if the client left."""
    parts = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives the messages read already, then the client's own."""
    given = 0

    async def replay() -> Message:
        nonlocal given
        if given < len(messages):
            given += 1
            return messages[given - 1]
        return await receive()

    return replay


async def answered_by(
    handler: ExceptionHandler, request: Request, error: Exception
) -> Response | None:
    """`handler`'s answer, called as Starlette calls it: awaited if it is a coroutine
    function, otherwise run in the thread pool (a plain function may block)."""
    if inspect.iscoroutinefunction(handler):
        answer: Any = await handler(request, error)
    else:
        answer = await run_in_threadpool(handler, request, error)
        if inspect.isawaitable(answer):  # an object whose __call__ is a coroutine
            answer = await answer
    return cast(Response | None, answer)


def handler_for(app: FastAPI, error: Exception) -> ExceptionHandler | None:
    """The app's own handler for `error` (a refusal, 503, 413...); None for the unexpected,
    which goes on up to the server-error handler as from any route."""
    for kind in type(error).__mro__:
        if kind is Exception:
            return None
        found = app.exception_handlers.get(kind)
        if found is not None:
            return cast(ExceptionHandler, found)
    return None
