"""The key ring: verdicts kept for a while, one lookup for many waiting requests, and the
keys of many requests looked up in one query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from boxoffice.db.database import Database
from boxoffice.domain.access import ApiKey
from boxoffice.services.keys import KeyRing

NOW = datetime(2026, 12, 1, tzinfo=UTC)
KEY = ApiKey("0123456789abcdef", "customer", None, "alice", None, NOW, None, None)


class SlowLookup:
    """Counts lookups (queries) and the tokens each asked for; each takes a moment, as a
    query does."""

    def __init__(self) -> None:
        self.calls = 0
        self.batches: list[list[str]] = []

    async def __call__(self, tokens: Sequence[str]) -> list[ApiKey | None]:
        self.calls += 1
        self.batches.append(list(tokens))
        await asyncio.sleep(0.01)
        return [KEY if token == "good" else None for token in tokens]


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


async def test_the_ring_vouches_only_for_keys_it_found_valid() -> None:
    """An address refused too often still gets keys looked up that this process has
    found valid before (api/access.py): one guesser behind a proxy locks out no one, and
    knowing a key's id is not enough to be looked up."""
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

    async def lookup(tokens: Sequence[str]) -> list[ApiKey | None]:
        return [stored if token == good else None for token in tokens]

    ring = KeyRing(None, cache_seconds=5, lookup=lookup)  # type: ignore[arg-type]
    assert not ring.vouches_for(good)
    assert await ring.principal(good, datetime.now(UTC)) is not None
    assert ring.vouches_for(good)
    assert not ring.vouches_for("bo_live_fedcba9876543210_guess")
    assert await ring.principal("bo_live_fedcba9876543210_guess", datetime.now(UTC)) is None
    assert not ring.vouches_for("bo_live_fedcba9876543210_guess")
    assert not ring.vouches_for("not a key")
    # The key's id is public (lists, logs): with any other secret it vouches for nothing.
    assert not ring.vouches_for(good.rsplit("_", 1)[0] + "_" + "x" * 43)


async def test_the_keys_of_many_requests_at_once_are_looked_up_together() -> None:
    """An opening's storm of first requests, each with a key of its own: one query for
    those of one moment, the next for those that came while it ran, each verdict its own."""
    lookup = SlowLookup()
    keys = ring(lookup, cache_seconds=60)
    first = [asyncio.ensure_future(keys.principal(f"bad-{n}", NOW)) for n in range(300)]
    first.append(asyncio.ensure_future(keys.principal("good", NOW)))
    while lookup.calls == 0:
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(keys.principal(f"late-{n}", NOW)) for n in range(700)]
    found = await asyncio.gather(*first, *later)
    assert [len(batch) for batch in lookup.batches] == [301, KeyRing.MAX_BATCH, 200]
    assert [p is not None for p in found] == [False] * 300 + [True] + [False] * 700


async def test_a_failed_lookup_fails_its_requests_and_the_next_ones_are_looked_up() -> None:
    """The database cannot serve: every request of that query gets the error (a 503 at
    the edge), and the ring keeps working afterwards."""
    calls = 0

    async def failing_once(tokens: Sequence[str]) -> list[ApiKey | None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("pool drained")
        return [KEY for _ in tokens]

    keys = KeyRing(cast(Database, None), cache_seconds=60, lookup=failing_once)
    failed = await asyncio.gather(
        *(keys.principal(f"t{n}", NOW) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(outcome, ConnectionError) for outcome in failed)
    assert await keys.principal("t0", NOW) is not None
