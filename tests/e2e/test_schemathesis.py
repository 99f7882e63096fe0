"""Schemathesis fuzzes every operation of the published OpenAPI document against a live server.

Checks: no server error, and status codes, content types, headers and bodies
that conform to the schema, including for invalid (negative) inputs, which must
be refused with a 4xx; and that no operation needing a key runs without one
(`ignored_auth`). `positive_data_acceptance` is left out on purpose: the
schema cannot say that a price has at most two decimals, or that ids generated
at random name no event, so schema-valid requests can rightly get 400 or 404.

Then a stateful run follows the document's links through the checkout (create an
event, book or hold in it, confirm or release the hold, cancel the booking), so real
bookings and holds are fuzzed too, and the test asserts that it did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.keys import first_admin_key
from tests.support.server import ServerProcess, inventory_check

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
# Revoking a key is fuzzed on its own, last: schemathesis learns key ids from `GET /keys`
# and, fuzzing `DELETE /keys/{key_id}` with them, revoked its own key early in the run,
# so everything after was answered 401 and tested nothing.
REVOKE_KEY = "revoke_key"
# The stateful run's operations: the checkout, and the reads that show it.
CHECKOUT = [
    "create_event",
    "get_event",
    "event_audit",
    "book",
    "get_booking",
    "cancel_booking",
    "place_hold",
    "get_hold",
    "confirm_hold",
    "release_hold",
]
# Links of src/boxoffice/api/operation_links.py, as schemathesis names them; each must be
# followed at least once to a 2xx: only then did a real event, booking or hold come through.
CHECKOUT_LINKS = {
    "POST /events -> [201] BookFirstSection -> POST /book",
    "POST /events -> [201] HoldFirstSection -> POST /holds",
    "POST /holds -> [201] ConfirmHold -> POST /holds/{hold_id}/confirm",
    "POST /holds -> [201] ReleaseHold -> DELETE /holds/{hold_id}",
    "POST /book -> [201] CancelBooking -> POST /bookings/{booking_id}/cancel",
    "POST /holds/{hold_id}/confirm -> [201] CancelFirstBooking"
    " -> POST /bookings/{booking_id}/cancel",
}
HOOKS = Path(__file__).with_name("schemathesis_checkout_hooks.py")
# Six steps (schemathesis's default) rarely reach the end of create, hold, confirm, cancel.
STATEFUL_CONFIG = "[phases.stateful]\nmax-steps = 12\n"


def test_schemathesis_finds_no_server_error_and_full_conformance(
    database_url: str, tmp_path: Path
) -> None:
    # Keys on, an admin's key on every request: `ignored_auth` and `missing_required_header`
    # then check that each operation the document says needs a key refuses to run without.
    keyed = {"BOXOFFICE_OPEN_ACCESS": "false"}
    key = first_admin_key(database_url)
    config = tmp_path / "schemathesis.toml"
    config.write_text(STATEFUL_CONFIG)
    events = tmp_path / "stateful.ndjson"
    with ServerProcess(database_url, log_dir=tmp_path, env=keyed) as server:
        fuzzed = _schemathesis(
            server.url,
            key,
            tmp_path,
            "--phases",
            "examples,coverage,fuzzing",
            "--exclude-operation-id",
            REVOKE_KEY,
        )
        key_kept = httpx.get(f"{server.url}/keys", headers={"Authorization": f"Bearer {key}"})
        followed: set[str] = set()
        # Which links schemathesis follows is drawn at random even in deterministic mode:
        # a link missed by one run (rare) gets a second run's chance before it fails.
        for _ in range(2):
            chained = _schemathesis(
                server.url,
                key,
                tmp_path,
                "--phases",
                "stateful",
                # Invalid requests are the other phases' work; these must get far enough
                # to chain.
                "--mode",
                "positive",
                *(
                    option
                    for operation in CHECKOUT
                    for option in ("--include-operation-id", operation)
                ),
                "--report",
                "ndjson",
                "--report-ndjson-path",
                str(events),
                config_file=config,
                hooks=HOOKS,
            )
            assert chained.returncode == 0, chained.stdout[-6000:] + chained.stderr[-2000:]
            followed |= links_followed_to_2xx(events)
            if followed >= CHECKOUT_LINKS:
                break
        revoked = _schemathesis(
            server.url,
            key,
            tmp_path,
            "--phases",
            "examples,coverage,fuzzing",
            "--include-operation-id",
            REVOKE_KEY,
        )
        log = server.log()
    assert fuzzed.returncode == 0, fuzzed.stdout[-6000:] + fuzzed.stderr[-2000:]
    assert key_kept.status_code == 200, "the fuzzing revoked its own key and tested nothing more"
    missed = CHECKOUT_LINKS - followed
    assert not missed, (
        f"the stateful run never followed {sorted(missed)} to a 2xx",
        chained.stdout[-3000:],
    )
    assert revoked.returncode == 0, revoked.stdout[-6000:] + revoked.stderr[-2000:]
    assert "Traceback" not in log, log[-4000:]
    # The real bookings, holds, confirms, releases and cancellations left the inventory exact.
    checked = inventory_check(database_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def links_followed_to_2xx(events: Path) -> set[str]:
    """The links schemathesis's stateful run followed and the server answered with a 2xx."""
    followed = set()
    for line in events.read_text().splitlines():
        scenario = json.loads(line).get("ScenarioFinished")
        if scenario is None:
            continue
        recorder = scenario["recorder"]
        for case_id, node in recorder.get("cases", {}).items():
            transition = node.get("transition")
            response = recorder.get("interactions", {}).get(case_id, {}).get("response")
            if (
                transition is not None
                and node.get("is_transition_applied")
                and response is not None
                and 200 <= response["status_code"] < 300
            ):
                followed.add(transition["id"])
    return followed


def _schemathesis(
    url: str,
    key: str,
    cwd: Path,
    *options: str,
    config_file: Path | None = None,
    hooks: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency"
    env = dict(os.environ)
    env.pop("SCHEMATHESIS_HOOKS", None)
    if hooks is not None:
        env["SCHEMATHESIS_HOOKS"] = str(hooks)
    return subprocess.run(
        [
            cli,
            *(["--config-file", str(config_file)] if config_file else []),
            "run",
            f"{url}/openapi.json",
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
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )
