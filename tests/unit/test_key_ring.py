"""The key ring: verdicts kept for a while, and one lookup for many waiting requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from boxoffice.db.database import Database
from boxoffice.domain.access import ApiKey
from boxoffice.services.keys import KeyRing

NOW = datetime(2026, 12, 1, tzinfo=UTC)
KEY = ApiKey("0123456789abcdef", "customer", None, "alice", None, NOW, None, None)


class SlowLookup:
    """Counts lookups; each takes a moment, as a query does."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, token: str) -> ApiKey | None:
        self.calls += 1
        await asyncio.sleep(0.01)
        return KEY if token == "good" else None


def ring(lookup: SlowLookup, cache_seconds: float) -> KeyRing:
    return KeyRing(cast(Database, None), cache_seconds=cache_seconds, lookup=lookup)


async def test_many_requests_with_one_stale_key_make_one_lookup() -> None:
    lookup = SlowLookup()
    keys = ring(lookup, cache_seconds=60)
    found = await asyncio.gather(*(keys.principal("good", NOW) for _ in range(64)))
    assert lookup.calls == 1
    assert {p.customer_id for p in found if p is not None} == {"alice"}
    await keys.principal("good", NOW)
    assert lookup.calls == 1  # fresh: no lookup at all


async def test_unknown_keys_are_refused_and_a_stale_verdict_is_looked_up_again() -> None:
    lookup = SlowLookup()
    keys = ring(lookup, cache_seconds=0)
    assert await keys.principal("bad", NOW) is None
    assert await keys.principal("good", NOW) is not None
    assert await keys.principal("good", NOW) is not None
    assert lookup.calls == 3


async def test_forget_keeps_no_verdict_from_a_lookup_begun_before_it() -> None:
    lookup = SlowLookup()
    keys = ring(lookup, cache_seconds=60)
    pending: Any = asyncio.ensure_future(keys.principal("good", NOW))
    while lookup.calls == 0:  # until the lookup has begun
        await asyncio.sleep(0)
    keys.forget()  # a revocation through this process
    await pending
    await keys.principal("good", NOW)
    assert lookup.calls == 2  # the verdict from before the revocation was not kept


async def test_the_ring_vouches_only_for_ids_it_found_valid() -> None:
    """An address refused too often still gets keys looked up whose id this process has
    found valid before (api/access.py): one guesser behind a proxy locks out no one."""
    from datetime import UTC, datetime

    from boxoffice.domain.access import ApiKey
    from boxoffice.services.keys import KeyRing

    good = "bo_live_0123456789abcdef_secret"
    stored = ApiKey(
        id="0123456789abcdef",
        role="customer",
        name=None,
        customer_id="c1",
        organizer_id=None,
        created_at=datetime.now(UTC),
        expires_at=None,
        revoked_at=None,
    )

    async def lookup(token: str) -> ApiKey | None:
        return stored if token == good else None

    ring = KeyRing(None, cache_seconds=5, lookup=lookup)  # type: ignore[arg-type]
    assert not ring.vouches_for(good)
    assert await ring.principal(good, datetime.now(UTC)) is not None
    assert ring.vouches_for(good)
    assert not ring.vouches_for("bo_live_fedcba9876543210_guess")
    assert await ring.principal("bo_live_fedcba9876543210_guess", datetime.now(UTC)) is None
    assert not ring.vouches_for("bo_live_fedcba9876543210_guess")
    assert not ring.vouches_for("not a key")
