"""Logged tracebacks carry no frame's locals: a request's locals hold its headers, and so
its API key (rich tracebacks, structlog's console default, print every local)."""

from __future__ import annotations

import logging

import pytest
import structlog

from boxoffice.observability.logging import configure_logging

SECRET = "bo_live_" + "s3cr3t" * 6


def _fail_with_a_key_in_hand() -> None:
    headers = [(b"authorization", f"Bearer {SECRET}".encode())]
    raise RuntimeError(f"boom after reading {len(headers)} header(s)")


@pytest.mark.parametrize("fmt", ["console", "json"])
@pytest.mark.parametrize("through", ["stdlib", "structlog"])
def test_a_logged_traceback_shows_no_locals(
    fmt: str, through: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", fmt)  # its handler writes to the stderr capsys captures
    try:
        _fail_with_a_key_in_hand()
    except RuntimeError:
        if through == "stdlib":  # as uvicorn logs "Exception in ASGI application"
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        else:
            structlog.get_logger("boxoffice.api").exception("unhandled_error")
    err = capsys.readouterr().err
    assert "_fail_with_a_key_in_hand" in err  # the traceback is there
    assert "boom after reading 1 header(s)" in err
    assert SECRET not in err
