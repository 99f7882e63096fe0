"""The server's edge, on a real `boxoffice serve`: slow, stalled and oversized requests get
a problem+json 408 or 431 and their connection closed, in bounded time; every answer
carries the security headers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

TIMEOUT = 1.0


def migrated_sqlite(folder: Path) -> str:
    """A new SQLite database in `folder`, migrated by the installed command, as a user would."""
    url = f"sqlite:///{folder / 'boxoffice.db'}"
    subprocess.run(
        [sys.executable, "-m", "boxoffice", "db", "upgrade"],
        env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    return url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("slow")
    url = migrated_sqlite(folder)
    env = {"BODY_TIMEOUT_SECONDS": str(TIMEOUT), "MAX_HEADER_BYTES": "8192"}
    with ServerProcess(url, env=env, log_dir=folder) as running:
        yield running


def exchange(server: ServerProcess, data: bytes, wait: float = 10) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes: (everything read, seconds taken)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(wait)
        if data:
            sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def problem(answer: bytes, status: int, code: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    assert json.loads(body)["code"] == code


def test_a_head_larger_than_the_limit_gets_431(server: ServerProcess) -> None:
    answer, _ = exchange(server, b"GET /events HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
    problem(answer, 431, "request_header_fields_too_large")
    within, _ = exchange(
        server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Ok: "
        + b"a" * 4000
        + b"\r\n\r\n",
    )
    assert within.startswith(b"HTTP/1.1 200 ")


def test_a_refused_head_is_answered_while_the_client_still_sends(server: ServerProcess) -> None:
    """A lingering close: the server says "no more" after its 431 and reads what still comes
    for a while, rather than closing on unread bytes, which resets the connection and can
    destroy the answer before the client reads it (3 in 200 on a loaded machine)."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
        answer = b""
        while chunk := sock.recv(65536):  # to the server's end of writing
            answer += chunk
        problem(answer, 431, "request_header_fields_too_large")
        for _ in range(3):  # still read and dropped: no reset
            sock.sendall(b"a" * 100_000)
            time.sleep(0.1)


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /events HTTP/1.1\r\nHost: x\r\n", b"GET /ev"],
    ids=["nothing", "headers-unfinished", "request-line-unfinished"],
)
def test_a_head_that_stalls_gets_408_in_bounded_time(server: ServerProcess, sent: bytes) -> None:
    answer, took = exchange(server, sent)
    problem(answer, 408, "request_timeout")
    assert TIMEOUT * 0.9 <= took < TIMEOUT + 3


def test_a_body_that_stalls_gets_408_and_books_nothing(server: ServerProcess) -> None:
    head = (
        b"POST /book HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200\r\n\r\n"
    )
    answer, took = exchange(server, head + b'{"eventId": "')
    problem(answer, 408, "request_timeout")
    assert took < TIMEOUT + 3
    # The server goes on serving.
    fine, _ = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert fine.startswith(b"HTTP/1.1 200 ")


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and `Content-Length` body) from a kept-alive connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_keep_alive_connections_are_not_cut_by_the_head_timer(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(TIMEOUT * 1.5)  # idle, within the keep-alive time (5 s)


def test_an_interim_answer_goes_at_once(server: ServerProcess) -> None:
    """`100 Continue` is sent before the body arrives: the client waits for it first."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        body = b'{"name": "x"}'
        sock.sendall(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        assert read_response(sock).startswith(b"HTTP/1.1 4")  # no key, or bad: answered


def test_logs_name_no_oversized_header(server: ServerProcess, tmp_path: Path) -> None:
    exchange(server, b"GET / HTTP/1.1\r\nAuthorization: Bearer " + b"z" * 20_000)
    assert "z" * 100 not in server.log()


SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/events", 200),
        ("GET", "/healthz", 200),
        ("GET", "/docs", 200),
        ("GET", "/nowhere", 404),
        ("POST", "/book", 400),
        ("GET", "/openapi.json", 200),
    ],
)
def test_every_answer_carries_the_security_headers(
    server: ServerProcess, method: str, path: str, status: int
) -> None:
    answer = httpx.request(method, f"{server.url}{path}", json={} if method == "POST" else None)
    assert answer.status_code == status
    for name, value in SECURITY.items():
        assert answer.headers.get_list(name) == [value], name
    assert "server" not in answer.headers  # what runs the service is nobody's business


def test_an_event_read_says_once_how_long_it_may_be_kept(server: ServerProcess) -> None:
    """uvicorn's default headers can only be added to: the event read's Cache-Control must
    be the only one, or a cache would obey the stricter no-store; a 304 has no body."""
    event = {"name": "Gig", "sections": [{"name": "A", "price": 1, "capacity": 1}]}
    made = httpx.post(f"{server.url}/events", json=event).raise_for_status().json()
    path = f"/events/{made['id']}"
    answer = httpx.get(f"{server.url}{path}")
    assert answer.status_code == 200
    assert answer.headers.get_list("cache-control") == ["public, max-age=0, must-revalidate"]
    for name in ("x-content-type-options", "x-frame-options", "referrer-policy"):
        assert answer.headers.get_list(name) == [SECURITY[name]]
    etag = answer.headers["etag"]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n".encode())
        unchanged = b""
        while b"\r\n\r\n" not in unchanged:  # a 304 has a head only
            unchanged += sock.recv(65536)
        # The connection stays usable: nothing but the head was sent.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
    head, _, body = unchanged.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 304 ")
    assert body == b""
    lines = head.decode().lower().split("\r\n")
    assert f"etag: {etag}" in lines
    assert [line for line in lines if line.startswith("cache-control:")] == [
        "cache-control: public, max-age=0, must-revalidate"
    ]
    assert not [line for line in lines if line.startswith(("content-length", "transfer-encoding"))]


def test_a_refusal_before_any_route_carries_them_too(server: ServerProcess) -> None:
    answer, _ = exchange(server, b"GET /events HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
    head = answer.partition(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 431")
    for name, value in SECURITY.items():
        assert f"\r\n{name}: {value.lower()}\r\n" in head


def test_a_body_trickled_a_byte_at_a_time_gets_408_in_bounded_time(server: ServerProcess) -> None:
    """Each byte comes well within the timeout; the whole body does not."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(
            b"POST /book HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n{"
        )
        answer = b""
        for _ in range(40):
            time.sleep(TIMEOUT / 4)
            try:
                sock.sendall(b" ")
            except OSError:
                break
        while chunk := sock.recv(65536):
            answer += chunk
    problem(answer, 408, "request_timeout")
    assert time.monotonic() - started < TIMEOUT + 5


def test_bytes_between_requests_do_not_hold_a_connection_open(server: ServerProcess) -> None:
    """Bare CRLFs after a response start no request, and cancelled uvicorn's keep-alive
    timer: the head timer must still close the connection."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        closed = False
        for _ in range(60):
            time.sleep(TIMEOUT / 4)
            try:
                sock.sendall(b"\r\n")
            except OSError:
                closed = True
                break
            sock.setblocking(False)
            try:
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed = True
                break
            finally:
                sock.setblocking(True)
                sock.settimeout(10)
    assert closed
    assert time.monotonic() - started < TIMEOUT + 5


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'proxy.db'}"
    subprocess.run(
        [sys.executable, "-m", "boxoffice", "db", "upgrade"],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    env = {
        "RATE_LIMITS_ENABLED": "true",
        "RATE_LIMIT_READ": "2/1h",
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
    }
    with ServerProcess(url, env=env, log_dir=tmp_path) as server:

        def read(client: str) -> int:
            forwarded = {"X-Forwarded-For": client}
            return httpx.get(f"{server.url}/events", headers=forwarded).status_code

        assert [read("198.51.100.1") for _ in range(3)] == [200, 200, 429]
        assert read("198.51.100.2") == 200  # another client behind the same proxy


def test_open_access_is_announced_at_every_start_whatever_the_log_level(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Each worker says so as it starts, even with only errors logged."""
    folder = tmp_path_factory.mktemp("open")
    url = migrated_sqlite(folder)
    env = {"LOG_LEVEL": "ERROR", "BOXOFFICE_OPEN_ACCESS": "true"}
    with ServerProcess(url, env=env, log_dir=folder, workers=2) as running:
        deadline = time.monotonic() + 30
        while running.log().count("OPEN ACCESS") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running.log().count("OPEN ACCESS") == 2, running.log()
