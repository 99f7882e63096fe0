"""API keys: made, listed, revoked, and checked on every request.

A key reads `bo_live_<id>_<secret>`: the prefix lets secret scanners find a
leaked one; `<id>` (16 hex digits) is public, names the key in lists and logs,
and finds its row; `<secret>` carries 256 random bits and is stored as its
SHA-256 only, compared in constant time. The whole key is shown once, when it
is made.

`KeyRing` checks keys for the HTTP edge and remembers each verdict for
`cache_seconds` (KEY_CACHE_SECONDS, 5 by default), so a request costs a dict
lookup, not a query. That is also how long a revocation takes to reach every
process; an expiry is checked on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, select, update

from boxoffice.db.database import Database
from boxoffice.db.driver import in_list
from boxoffice.db.rows import api_key_from_row
from boxoffice.db.tables import KEY_ID_LENGTH, api_keys
from boxoffice.domain.access import ROLES, ApiKey, Principal, Role
from boxoffice.domain.errors import InvalidRequest, KeyNotFound
from boxoffice.services.coalesced import Coalesced
from boxoffice.services.unit_of_work import UnitOfWork

KEY_PREFIX = "bo_live_"
_SECRET_BYTES = 32
MAX_SECRET_LENGTH = 128  # ours are 43 characters; anything far longer is not one of ours
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made, with the secret that is never shown again."""

    key: ApiKey
    token: str


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _matches(stored_sha256: str, secret: str) -> bool:
    return hmac.compare_digest(stored_sha256, _sha256(secret))


def split_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, underscore, secret = token[len(KEY_PREFIX) :].partition("_")
    if len(key_id) != KEY_ID_LENGTH or not set(key_id) <= _HEX:
        return None
    if not underscore or not secret or len(secret) > MAX_SECRET_LENGTH:
        return None
    return key_id, secret


def _check_spec(role: str, customer_id: str | None, organizer_id: str | None) -> None:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}.", field="role")
    if (role == "customer") != (customer_id is not None):
        raise InvalidRequest(
            "A customer key names its customer (customerId), and only a customer key does.",
            field="customerId",
        )
    if role != "organizer" and organizer_id is not None:
        raise InvalidRequest("Only an organizer key names an organizer.", field="organizerId")


async def create_key(
    database: Database,
    *,
    role: str,
    now: datetime,
    name: str | None = None,
    customer_id: str | None = None,
    organizer_id: str | None = None,
    expires_at: datetime | None = None,
) -> NewKey:
    """Make a key. An organizer key without `organizer_id` starts a new organizer, named by
    the key's id; give an existing organizer's id to make it a second key (rotation)."""
    _check_spec(role, customer_id, organizer_id)
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("expiresAt must be in the future.", field="expiresAt")
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    if role == "organizer" and organizer_id is None:
        organizer_id = key_id
    key = ApiKey(key_id, cast(Role, role), name, customer_id, organizer_id, now, expires_at, None)
    async with UnitOfWork(database, write=True) as uow:
        await uow.conn.execute(
            api_keys.insert().values(
                id=key.id,
                secret_sha256=_sha256(secret),
                role=key.role,
                name=key.name,
                customer_id=key.customer_id,
                organizer_id=key.organizer_id,
                created_at=key.created_at,
                expires_at=key.expires_at,
            )
        )
        await uow.commit()
    return NewKey(key, f"{KEY_PREFIX}{key_id}_{secret}")


async def create_customer_keys(
    database: Database, customer_ids: list[str], now: datetime
) -> list[str]:
    """Make one customer key for each of `customer_ids` (in that order), in one transaction;
    the whole keys, each shown this once. For load tests of many customers."""
    made = [
        (secrets.token_hex(KEY_ID_LENGTH // 2), secrets.token_urlsafe(_SECRET_BYTES), customer)
        for customer in customer_ids
    ]
    for _, _, customer in made:
        _check_spec("customer", customer, None)
    async with UnitOfWork(database, write=True) as uow:
        # In slices: one statement of 200,000 rows' parameters is more than a driver takes.
        for start in range(0, len(made), 5000):
            await uow.conn.execute(
                api_keys.insert(),
                [
                    {
                        "id": key_id,
                        "secret_sha256": _sha256(secret),
                        "role": "customer",
                        "name": None,
                        "customer_id": customer,
                        "organizer_id": None,
                        "created_at": now,
                        "expires_at": None,
                    }
                    for key_id, secret, customer in made[start : start + 5000]
                ],
            )
        await uow.commit()
    return [f"{KEY_PREFIX}{key_id}_{secret}" for key_id, secret, _ in made]


_LISTED = select(
    api_keys.c.id,
    api_keys.c.role,
    api_keys.c.name,
    api_keys.c.customer_id,
    api_keys.c.organizer_id,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
)


async def list_keys(database: Database) -> list[ApiKey]:
    """Every key, oldest first, revoked ones included; never a secret."""
    async with UnitOfWork(database, write=False) as uow:
        rows = await uow.conn.execute(_LISTED.order_by(api_keys.c.created_at, api_keys.c.id))
        return [api_key_from_row(row) for row in rows]


async def count_keys(database: Database) -> int:
    async with UnitOfWork(database, write=False) as uow:
        return int(
            (await uow.conn.execute(select(func.count()).select_from(api_keys))).scalar_one()
        )


async def revoke_key(database: Database, key_id: str, now: datetime) -> ApiKey:
    """Revoke a key (again: harmless, the first revocation's time stays)."""
    async with UnitOfWork(database, write=True) as uow:
        await uow.conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        row = (await uow.conn.execute(_LISTED.where(api_keys.c.id == key_id))).first()
        if row is None:
            raise KeyNotFound(key_id)
        await uow.commit()
    return api_key_from_row(row)


async def find_key(database: Database, token: str) -> ApiKey | None:
    """The key `token` is, if it is one we made (revoked and expired ones included)."""
    return (await find_keys(database, [token]))[0]


async def find_keys(database: Database, tokens: Sequence[str]) -> list[ApiKey | None]:
    """For each of `tokens`, the key it is (as `find_key`), in one query."""
    parts = [split_token(token) for token in tokens]
    ids = {found[0] for found in parts if found is not None}
    rows: dict[str, Any] = {}
    if ids:
        # One statement, on its own: no BEGIN and ROLLBACK round trips (a request's path).
        async with UnitOfWork(database, write=False, single_statement=True) as uow:
            for stored in await uow.conn.execute(
                select(api_keys.c.secret_sha256, *_LISTED.selected_columns).where(
                    api_keys.c.id.in_(in_list(ids))
                )
            ):
                rows[stored.id] = stored
    found: list[ApiKey | None] = []
    for part in parts:
        row = None if part is None else rows.get(part[0])
        if part is None or row is None or not _matches(row.secret_sha256, part[1]):
            found.append(None)
        else:
            found.append(api_key_from_row(row))
    return found


class KeyRing:
    """Keys checked for the HTTP edge, each verdict kept `cache_seconds`.

    A stale verdict is looked up again once, however many requests carry the key
    at that moment: they all wait for the one lookup (a key used by 64
    connections at once would otherwise cost 64 queries every `cache_seconds`,
    and their wait showed as a p99 spike). And the keys to look up are looked up
    together (`services/coalesced.py`), up to `MAX_BATCH` in one query, while the
    previous query runs: the first requests of many customers at once (an
    on-sale's opening, where each one's first request is its join) took a pooled
    connection and a transaction each, drained the pool and answered 503 (`make
    onsale`).
    """

    MAX_BATCH = 500

    def __init__(
        self,
        database: Database,
        *,
        cache_seconds: float,
        max_size: int = 10_000,
        lookup: Callable[[Sequence[str]], Awaitable[list[ApiKey | None]]] | None = None,
    ) -> None:
        self._lookup = lookup or (lambda tokens: find_keys(database, tokens))
        self._cache_seconds = cache_seconds
        self._max_size = max_size
        self._verdicts: OrderedDict[str, _Verdict] = OrderedDict()
        self._reads = Coalesced(self._look_up, name="api_keys", max_batch=self.MAX_BATCH)
        self._generation = 0  # bumped by forget(): a lookup begun before it is not kept
        # Digests of whole keys found valid: not their ids, which are public (in lists and
        # logs) and would let a blocked guesser's `bo_live_<known id>_<guess>` through.
        self._vouched: OrderedDict[bytes, None] = OrderedDict()

    def vouches_for(self, token: str) -> bool:
        """Whether `token` is a key this process has found valid before, secret and all:
        an address refused too often still gets such keys looked up."""
        return _digest(token) in self._vouched

    async def principal(self, token: str, now: datetime) -> Principal | None:
        """Who `token` is, or None when it is no valid key (unknown, revoked or expired)."""
        verdict = self._verdicts.get(token)
        if verdict is None or time.monotonic() - verdict.checked >= self._cache_seconds:
            verdict = await self._reads.get(token)
        if verdict.key is None or not verdict.key.valid_at(now):
            return None
        return verdict.principal

    async def _look_up(self, tokens: Sequence[str]) -> list[_Verdict]:
        checked, generation = time.monotonic(), self._generation
        keys = await self._lookup(tokens)
        return [
            self._keep(token, key, checked, generation)
            for token, key in zip(tokens, keys, strict=True)
        ]

    def _keep(self, token: str, key: ApiKey | None, checked: float, generation: int) -> _Verdict:
        verdict = _Verdict(checked, key, None if key is None else key.principal())
        if key is not None:
            self._vouched[_digest(token)] = None
            while len(self._vouched) > self._max_size:
                self._vouched.popitem(last=False)
        if generation != self._generation:
            return verdict  # answers its waiters, but a revocation came since: not kept
        self._verdicts[token] = verdict
        self._verdicts.move_to_end(token)
        while len(self._verdicts) > self._max_size:
            self._verdicts.popitem(last=False)
        return verdict

    def forget(self) -> None:
        """Drop every verdict (a key revoked through this process takes effect at once)."""
        self._generation += 1
        self._verdicts.clear()
        self._reads.forget()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class _Verdict:
    checked: float  # time.monotonic() of the lookup
    key: ApiKey | None
    principal: Principal | None
