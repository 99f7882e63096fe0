"""Polls answered by the server's protocol itself (api/http_protocol.py): the very bytes the
app gives, on a real uvicorn server with our protocol, in this process, so the test sees
whether the app was reached. Every case the protocol must leave to the app goes there."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from boxoffice.api import http_protocol
from boxoffice.api.http_protocol import GuardedHttpToolsProtocol
from boxoffice.api.security_headers import SECURITY_HEADERS
from boxoffice.config import Settings
from boxoffice.db.database import Database
from tests.api.test_waiting_room import Sale, open_sale
from tests.support.postgres import free_port


class Quiet(GuardedHttpToolsProtocol):
    """The protocol as `boxoffice serve --no-access-log` runs it. (Under pytest, whose log
    capture hands uvicorn's access logger a handler, uvicorn would log every request.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = False


class CountingApp:
    """The app, counting the polls that reach it (`.app`: the protocol finds the state)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.polls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/queue/"):
            self.polls += 1
        await self.app(scope, receive, send)


class Served:
    def __init__(self, sale: Sale, app: CountingApp, port: int) -> None:
        self.sale = sale
        self.app = app
        self.port = port
        self.counted: list[tuple[str, str, int]] = []

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, raw: bytes, answers: int = 1) -> list[tuple[bytes, bytes]]:
        reader, writer = await self.connect()
        try:
            writer.write(raw)
            return [await read_answer(reader) for _ in range(answers)]
        finally:
            writer.close()


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one answer with a content-length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    return head, await reader.readexactly(length)


def get(path: str, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: test", *headers, "", ""]
    return "\r\n".join(lines).encode()


def masked(head: bytes) -> bytes:
    """The head without what differs from one answer to the next."""
    head = re.sub(rb"date: [^\r]+", b"date: *", head)
    return re.sub(rb"x-request-id: [^\r]+", b"x-request-id: *", head)


@contextlib.asynccontextmanager
async def served(
    settings: Settings,
    database: Database,
    protocol: type[GuardedHttpToolsProtocol] = Quiet,
    access_log: bool = False,
    keep_alive: int = 5,
) -> AsyncIterator[Served]:
    async with open_sale(settings, database) as sale:
        app = CountingApp(sale.app)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                http=protocol,
                headers=SECURITY_HEADERS,
                server_header=False,
                access_log=access_log,
                timeout_keep_alive=keep_alive,
                lifespan="off",  # the sale's own lifespan runs already
                log_config=None,
            )
        )
        running = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        served = Served(sale, app, port)
        sale.app.state.count_request = lambda scope, status, seconds: served.counted.append(
            (scope["route"].path, scope["method"], status)
        )
        try:
            yield served
        finally:
            server.should_exit = True
            await running


@pytest.fixture
async def server(settings: Settings, database: Database) -> AsyncIterator[Served]:
    async with served(settings, database) as opened:
        yield opened


async def tickets(server: Served, count: int) -> list[str]:
    sale = server.sale
    event = await sale.event()
    await sale.room(event)
    return [(await sale.join(event, await sale.customer(f"c{n}")))["ticket"] for n in range(count)]


async def test_a_plain_poll_is_answered_by_the_protocol_with_the_apps_very_bytes(
    server: Served,
) -> None:
    (ticket,) = await tickets(server, 1)
    server.sale.clock.advance(31)
    [(head, body)] = await server.exchange(get(f"/queue/{ticket}", "X-Request-ID: mine-1"))
    assert server.app.polls == 0  # never reached the app
    assert server.counted == [("/queue/{ticket}", "GET", 200)]
    server.sale.clock.advance(31)
    # The same poll with an Origin goes to the app (CORS is its business; none is set up).
    [(their_head, their_body)] = await server.exchange(
        get(f"/queue/{ticket}", "X-Request-ID: mine-1", "Origin: https://shop.example")
    )
    assert server.app.polls == 1
    assert masked(head) == masked(their_head)
    assert body == their_body
    assert b"x-request-id: mine-1\r\n" in head  # the client's id, as the app echoes it
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    for name, value in SECURITY_HEADERS:
        assert f"{name.lower()}: {value}\r\n".encode() in head
    assert b"cache-control: no-store\r\n" in head
    assert b"connection: close" not in head


async def test_one_connection_keeps_alive_across_polls_and_other_requests(
    server: Served,
) -> None:
    first, second = await tickets(server, 2)
    server.sale.clock.advance(31)
    reader, writer = await server.connect()
    try:
        answers = []
        for raw in (get(f"/queue/{first}"), get("/healthz"), get(f"/queue/{second}")):
            writer.write(raw)
            answers.append(await read_answer(reader))
    finally:
        writer.close()
    assert [head.split(b"\r\n", 1)[0] for head, _ in answers] == [b"HTTP/1.1 200 OK"] * 3
    assert first.encode() in answers[0][1]
    assert second.encode() in answers[2][1]
    assert server.app.polls == 0
    # Each answer names its own request: ids are never reused.
    ids = [re.search(rb"x-request-id: ([^\r]+)", head).group(1) for head, _ in answers]  # type: ignore[union-attr]
    assert len(set(ids)) == 3


async def test_connection_close_is_answered_so_and_the_connection_closed(server: Served) -> None:
    (ticket,) = await tickets(server, 1)
    server.sale.clock.advance(31)
    reader, writer = await server.connect()
    try:
        writer.write(get(f"/queue/{ticket}", "Connection: close"))
        head, _ = await read_answer(reader)
        assert b"connection: close\r\n" in head
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    finally:
        writer.close()
    assert server.app.polls == 0


async def test_pipelined_requests_are_answered_in_order(server: Served) -> None:
    first, second = await tickets(server, 2)
    server.sale.clock.advance(31)
    answers = await server.exchange(
        get("/healthz") + get(f"/queue/{first}") + get(f"/queue/{second}"), answers=3
    )
    assert b'"status"' in answers[0][1]
    assert first.encode() in answers[1][1]
    assert second.encode() in answers[2][1]
    # Both polls came (in one read) behind a request still being answered: the app's, in
    # the pipeline's order.
    assert server.app.polls == 2


@pytest.mark.parametrize(
    ("request_line", "status", "code"),
    [
        ("too soon", 429, b"poll_too_soon"),
        ("forged", 404, b"queue_ticket_invalid"),
        ("with a query", 200, None),
        ("HTTP/1.0", 200, None),
        ("with a key", 401, b"unauthorized"),
    ],
)
async def test_everything_but_the_plain_case_goes_to_the_app(
    server: Served, request_line: str, status: int, code: bytes | None
) -> None:
    (ticket,) = await tickets(server, 1)
    server.sale.clock.advance(31)
    raw = {
        "too soon": get(f"/queue/{ticket}"),
        "forged": get("/queue/wq1.nonsense"),
        "with a query": get(f"/queue/{ticket}?x=1"),
        "HTTP/1.0": get(f"/queue/{ticket}", version="1.0"),
        "with a key": get(f"/queue/{ticket}", "Authorization: Bearer bo_nonsense"),
    }[request_line]
    if request_line == "too soon":
        await server.exchange(get(f"/queue/{ticket}"))  # on time: answered, and paced
        assert server.app.polls == 0
    [(head, body)] = await server.exchange(raw)
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    if code is not None:
        assert code in body
    assert server.app.polls == 1


async def test_with_the_access_log_on_every_poll_goes_to_the_app_and_is_logged(
    settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(settings, database, GuardedHttpToolsProtocol, access_log=True) as logged:
        (ticket,) = await tickets(logged, 1)
        logged.sale.clock.advance(31)
        with caplog.at_level(logging.INFO, logger="uvicorn.access"):
            [(head, _)] = await logged.exchange(get(f"/queue/{ticket}"))
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert logged.app.polls == 1
    assert any(f"GET /queue/{ticket} HTTP/1.1" in line for line in caplog.messages)


async def test_a_request_right_behind_a_poll_is_not_cut_off_by_the_keep_alive_timer(
    settings: Settings, database: Database
) -> None:
    """The poll's answer ends as uvicorn's do, arming the idle connection's timer; a request
    parsed from the same read must disarm it, or its connection closes under it."""
    async with served(settings, database, keep_alive=1) as server:
        (ticket,) = await tickets(server, 1)
        event = await server.sale.event()
        await server.sale.room(event)
        key = (await server.sale.customer("late"))["Authorization"]
        server.sale.clock.advance(31)
        reader, writer = await server.connect()
        try:
            join = (
                f"POST /events/{event['id']}/queue HTTP/1.1\r\nHost: test\r\n"
                f"Authorization: {key}\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\n\r\n"
            )
            writer.write(get(f"/queue/{ticket}") + join.encode())  # one read: poll, join head
            poll_head, _ = await read_answer(reader)
            await asyncio.sleep(1.6)  # past the keep-alive time, the join's body still due
            writer.write(b"{}")
            join_head, joined = await read_answer(reader)
        finally:
            writer.close()
    assert poll_head.startswith(b"HTTP/1.1 200 OK")
    assert join_head.startswith(b"HTTP/1.1 201 Created"), join_head
    assert b'"ticket"' in joined
    assert server.app.polls == 0


async def test_a_failure_in_the_protocols_poll_leaves_the_poll_to_the_app(
    server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised out of the parser's callback it would be a 400 "Invalid HTTP request"."""
    (ticket,) = await tickets(server, 1)
    server.sale.clock.advance(31)

    def broken(*args: Any) -> bytes:
        raise RuntimeError("a bug in the protocol's poll")

    monkeypatch.setattr(http_protocol, "poll_body", broken)
    [(head, body)] = await server.exchange(get(f"/queue/{ticket}"))
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert ticket.encode() in body
    assert server.app.polls == 1


async def test_a_poll_answered_but_not_counted_keeps_its_connection(server: Served) -> None:
    first, second = await tickets(server, 2)
    server.sale.clock.advance(31)

    def broken(*args: Any) -> None:
        raise RuntimeError("metrics are down")

    server.sale.app.state.count_request = broken
    answers = await server.exchange(get(f"/queue/{first}") + get(f"/queue/{second}"), answers=2)
    assert [head.split(b"\r\n", 1)[0] for head, _ in answers] == [b"HTTP/1.1 200 OK"] * 2
    assert server.app.polls == 0


@pytest.mark.parametrize("case", ["HEAD", "an empty body"])
async def test_a_head_or_a_poll_with_a_body_header_goes_to_the_app(
    server: Served, case: str
) -> None:
    (ticket,) = await tickets(server, 1)
    server.sale.clock.advance(31)
    if case == "HEAD":
        raw = get(f"/queue/{ticket}").replace(b"GET ", b"HEAD ", 1)
    else:
        raw = get(f"/queue/{ticket}", "Content-Length: 0")
    reader, writer = await server.connect()
    try:
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 405 "))
    assert server.app.polls == 1


def test_the_apps_state_is_found_under_uvicorns_proxy_headers_middleware() -> None:
    app = FastAPI()
    assert http_protocol._state_of(ProxyHeadersMiddleware(app, "127.0.0.1")) is app.state
    assert http_protocol._state_of(object()) is None
