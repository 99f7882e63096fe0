"""Every answer carries `X-Request-ID` (the client's when sensible, else a fresh one), and
every line logged while the request runs names it, in both log formats."""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any

import httpx
import pytest

from boxoffice.observability.logging import configure_logging
from tests.api.conftest import assert_problem, create


async def test_every_answer_carries_a_request_id_and_ours_are_unique(
    client: httpx.AsyncClient,
) -> None:
    event = await create(client)
    book = {"eventId": event["id"], "sectionId": event["sections"][1]["id"], "qty": 1}
    answers = [
        await client.post("/book", json=book),  # 201
        await client.get("/events/00000000-0000-0000-0000-000000000000"),  # 404
        await client.post("/book", json={**book, "qty": 0}),  # 400
        await client.get("/bookings", headers={"Authorization": "Bearer bo_live_nope"}),  # 401
        await client.post("/book", content=b"x" * 100_000),  # 413
        await client.get("/readyz"),
        await client.get("/healthz"),
    ]
    assert [a.status_code for a in answers] == [201, 404, 400, 401, 413, 200, 200]
    ids = [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == len(ids)
    assert all(0 < len(ident) <= 128 for ident in ids)
    assert all(len(a.headers.get_list("x-request-id")) == 1 for a in answers)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-abc", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("tab\there", False),
        ("", False),
    ],
)
async def test_a_sensible_client_id_is_kept_and_any_other_replaced(
    client: httpx.AsyncClient, sent: str, kept: bool
) -> None:
    answer = await client.get("/healthz", headers={"X-Request-ID": sent})
    assert (answer.headers["x-request-id"] == sent) is kept


@pytest.mark.parametrize("fmt", ["console", "json"])
async def test_every_line_logged_for_a_request_names_it(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """An unexpected error is logged while its request runs; the line carries the id, and
    lines logged outside any request carry none."""
    configure_logging("INFO", fmt)
    written = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)
    event = await create(client)
    app: Any = client._transport.app  # type: ignore[attr-defined]

    async def broken(command: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.state.booker, "submit", broken)
    book = {"eventId": event["id"], "sectionId": event["sections"][1]["id"], "qty": 1}
    answer = await client.post("/book", json=book, headers={"X-Request-ID": "trace-42"})
    # A thread starts with a context of its own: no request's.
    elsewhere = threading.Thread(
        target=logging.getLogger("boxoffice.test").info, args=("outside any request",)
    )
    elsewhere.start()
    elsewhere.join()
    assert_problem(answer, 500, "internal_error")
    assert answer.headers["x-request-id"] == "trace-42"
    lines = written.getvalue().splitlines()
    during = [line for line in lines if "unhandled_error" in line]
    outside = [line for line in lines if "outside any request" in line]
    assert during, lines
    assert outside, lines
    for line in during:
        if fmt == "json":
            assert json.loads(line)["request_id"] == "trace-42"
        else:
            assert "request_id=trace-42" in line
    assert "request_id" not in outside[0]
