"""API keys for tests: made straight in the database, as `boxoffice keys create` does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime

from boxoffice.db.database import Database
from boxoffice.services.keys import create_key

# A whole key: its public id and at least a piece of its secret. The id alone
# (`bo_live_<id>`) names a key in lists and logs and gives nothing away.
KEY_MATERIAL = re.compile(r"bo_live_[0-9a-f]{16}_[A-Za-z0-9_-]{6,}")


def key_material_in(text: str) -> list[str]:
    """The pieces of `text` that carry a key's secret (masked, so a report does not leak)."""
    return [found[:24] + "…" for found in KEY_MATERIAL.findall(text)]


async def bearer(
    database: Database,
    role: str = "admin",
    *,
    customer_id: str | None = None,
    organizer_id: str | None = None,
) -> dict[str, str]:
    """The Authorization header of a new key with `role`."""
    made = await create_key(
        database,
        role=role,
        now=datetime.now(UTC),
        customer_id=customer_id,
        organizer_id=organizer_id,
    )
    return {"Authorization": f"Bearer {made.token}"}


def first_admin_key(database_url: str) -> str:
    """The key a first `make run` prints (`boxoffice keys bootstrap`), alone on its last line."""
    return _printed_key(database_url, "bootstrap", BOXOFFICE_OPEN_ACCESS="false")


def key_by_cli(database_url: str, role: str, *options: str) -> str:
    """A new key made as an operator would, `boxoffice keys create --role ROLE …`: the
    key alone on standard output's last line."""
    return _printed_key(database_url, "create", "--role", role, *options)


def _printed_key(database_url: str, *arguments: str, **env: str) -> str:
    """The key `boxoffice keys ARGUMENTS` prints alone on standard output's last line."""
    made = subprocess.run(
        [sys.executable, "-m", "boxoffice", "keys", *arguments],
        env={**os.environ, "DATABASE_URL": database_url, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("bo_live_"), made.stdout
    return key
