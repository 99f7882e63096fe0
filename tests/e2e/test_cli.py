"""The `boxoffice` command's failure modes: one clear line, exit 1, no secret printed."""

from __future__ import annotations

import os
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
