"""The `boxoffice` command's failure modes: one clear line, exit 1, no secret printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import free_port


def boxoffice(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boxoffice", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def test_unreachable_database_is_one_line_without_the_password() -> None:
    url = f"postgresql://app:hunter2-secret@127.0.0.1:{free_port()}/x"
    for command in (["db", "upgrade"], ["serve"]):
        run = boxoffice(*command, DATABASE_URL=url)
        assert run.returncode == 1
        output = run.stdout + run.stderr
        assert "cannot reach the postgresql database" in output
        assert "hunter2-secret" not in output
        assert "Traceback" not in output


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    run = boxoffice("serve", DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    assert run.returncode == 1
    assert "run `boxoffice db upgrade` first" in run.stderr
    assert "Traceback" not in run.stderr


def test_upgrade_says_what_it_did(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    first = boxoffice("db", "upgrade", DATABASE_URL=url)
    again = boxoffice("db", "upgrade", DATABASE_URL=url)
    assert first.returncode == again.returncode == 0
    assert "upgraded from nothing to" in first.stderr
    assert "nothing to do" in again.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"DEFAULT_PAGE_SIZE": "500", "MAX_PAGE_SIZE": "100"},
        {"PORT": "0"},
        {"DATABASE_URL": "mysql://u@h/db"},
    ],
)
def test_invalid_configuration_is_refused(env: dict[str, str]) -> None:
    run = boxoffice("db", "upgrade", **env)
    assert run.returncode == 1
    assert "invalid configuration" in run.stderr


def test_serve_refuses_a_bad_availability_staleness_naming_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    run = boxoffice("serve", DATABASE_URL=url, AVAILABILITY_MAX_STALENESS_MS="60000")
    assert run.returncode == 1
    assert "invalid configuration" in run.stderr
    assert "availability_max_staleness_ms" in run.stderr
    assert "less than or equal to 10000" in run.stderr
    assert "Traceback" not in run.stderr


KEY_FORMAT = re.compile(r"bo_live_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def test_keys_are_made_listed_and_revoked_and_shown_only_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert boxoffice("db", "upgrade", DATABASE_URL=url).returncode == 0
    first = boxoffice("keys", "bootstrap", DATABASE_URL=url)
    assert first.returncode == 0
    admin = first.stdout.strip().splitlines()[-1]
    assert KEY_FORMAT.fullmatch(admin), admin
    again = boxoffice("keys", "bootstrap", DATABASE_URL=url)
    assert again.returncode == 0
    assert again.stdout == ""  # the first admin key is printed once, never again
    made = boxoffice(
        "keys",
        "create",
        "--role",
        "customer",
        "--customer-id",
        "c1",
        "--name",
        "Till 3",
        "--expires",
        "2099-01-31T00:00:00+00:00",
        DATABASE_URL=url,
    )
    assert made.returncode == 0, made.stderr
    # The key alone on standard output, its only line: KEY=$(… | tail -1) captures it.
    [key] = made.stdout.splitlines()
    assert KEY_FORMAT.fullmatch(key), key
    key_id, secret = key.removeprefix("bo_live_")[:16], key.removeprefix("bo_live_")[17:]
    listed = boxoffice("keys", "list", DATABASE_URL=url)
    row = next(line for line in listed.stdout.splitlines() if key_id in line)
    assert "Till 3" in row
    assert "2099-01-31T00:00:00+00:00" in row
    assert "c1" in row
    for shown in (secret, admin.removeprefix("bo_live_")[17:]):  # never a secret
        assert shown not in listed.stdout + listed.stderr
    revoked = boxoffice("keys", "revoke", key_id, DATABASE_URL=url)
    assert revoked.returncode == 0
    assert "Revoked" in revoked.stderr
    unknown = boxoffice("keys", "revoke", "0" * 16, DATABASE_URL=url)
    assert unknown.returncode == 1
    wrong = boxoffice("keys", "create", "--role", "customer", DATABASE_URL=url)
    assert wrong.returncode == 1
    assert "customerId" in wrong.stderr
    assert "Traceback" not in wrong.stderr
