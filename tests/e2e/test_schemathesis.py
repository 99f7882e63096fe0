"""Schemathesis fuzzes every operation of the published OpenAPI document against a live server.

Checks: no server error, and status codes, content types, headers and bodies
that conform to the schema, including for invalid (negative) inputs, which must
be refused with a 4xx; and that no operation needing a key runs without one
(`ignored_auth`). `positive_data_acceptance` is left out on purpose: the
schema cannot say that a price has at most two decimals, or that ids generated
at random name no event, so schema-valid requests can rightly get 400 or 404.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.keys import first_admin_key
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "unsupported_method",
        "missing_required_header",
        "ignored_auth",
    ]
)


def test_schemathesis_finds_no_server_error_and_full_conformance(
    database_url: str, tmp_path: Path
) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency"
    # Keys on, an admin's key on every request: `ignored_auth` and `missing_required_header`
    # then check that each operation the document says needs a key refuses to run without.
    keyed = {"BOXOFFICE_OPEN_ACCESS": "false"}
    key = first_admin_key(database_url)
    with ServerProcess(database_url, log_dir=tmp_path, env=keyed) as server:
        run = subprocess.run(
            [
                cli,
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {key}",
                "--checks",
                CHECKS,
                "--max-examples",
                "60",
                "--seed",
                "4521",
                "--generation-deterministic",
                "--request-timeout",
                "30",
                "--warnings",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        log = server.log()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Traceback" not in log, log[-4000:]
