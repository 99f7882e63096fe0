"""API keys for tests: made straight in the database, as `boxoffice keys create` does."""

from __future__ import annotations

from datetime import UTC, datetime

from boxoffice.db.database import Database
from boxoffice.services.keys import create_key


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
