"""Idempotency keys: a retried request gets the first answer again, and changes nothing.

Following the IETF httpapi Idempotency-Key draft and the payment APIs:

- A key is 1 to 255 printable ASCII characters, scoped to the caller (the
  request's `customerId`, or the client as a whole when there is none).
- The first request's answer is stored in the SAME transaction as its effect
  (`idempotency_keys`, written with the batch: see `booking/write.py`), so an
  answer is stored if and only if its effect is.
- A retry with the same key and the same request gets the stored answer; the
  same key with a different request (another fingerprint) is refused with 422
  `idempotency_key_reused`.
- A duplicate that arrives while the first is still in flight is refused with
  409 `idempotency_in_progress`: inside a process through `InFlight`, across
  PostgreSQL processes through a transaction-scoped advisory lock on the key
  (`booking/load.py`). On SQLite other processes wait for the file's write
  lock, so by their turn the first is answered and they get its answer.
- Answers are kept at least `IDEMPOTENCY_TTL_HOURS`, then purged by the sweeper.

Answers are stored as JSON of the domain's outcome (`encode`/`decode`), not as
HTTP bodies: the edge renders a replayed outcome exactly as it rendered the first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import select

from boxoffice.db.database import Database
from boxoffice.db.tables import idempotency_keys
from boxoffice.domain.commands import Confirmation, Idempotency, Released, Swept
from boxoffice.domain.decisions import Outcome
from boxoffice.domain.errors import (
    BoxofficeError,
    IdempotencyInProgress,
    InvalidRequest,
    rebuild_error,
)
from boxoffice.domain.model import Booking, Event, Hold, HoldItem, Section
from boxoffice.services.unit_of_work import UnitOfWork

MAX_KEY_LENGTH = 255
ANONYMOUS_SCOPE = ""


def check_key(key: str) -> str:
    """The key, if it is 1 to 255 printable ASCII characters; otherwise a 400."""
    if not (1 <= len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()):
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            field="Idempotency-Key",
        )
    return key


def fingerprint(operation: str, request: Any) -> str:
    """A digest of what was asked: the operation and its parsed request.

    `request` is built from the parsed body (a tuple of its fields, or its model's
    dump, whose key order the model fixes), so JSON spacing and key order do not
    matter. `repr` of those plain values is canonical, and five times as fast as
    `json.dumps` for a request this small (1.4 against 7.4 µs with the hash).
    """
    return hashlib.sha256(repr((operation, request)).encode()).hexdigest()


def idempotency(
    key: str | None, *, scope: str | None, operation: str, request: Any
) -> Idempotency | None:
    if key is None:
        return None
    return Idempotency(scope or ANONYMOUS_SCOPE, check_key(key), fingerprint(operation, request))


class InFlight:
    """The keys this process is answering now; a second request with one of them is a 409."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()

    def claim(self, key: Idempotency) -> None:
        """Take `key` until `release`, or raise `IdempotencyInProgress` if it is taken."""
        if key.ident in self._keys:
            raise IdempotencyInProgress()
        self._keys.add(key.ident)

    def release(self, key: Idempotency) -> None:
        self._keys.discard(key.ident)

    @contextmanager
    def claimed(self, key: Idempotency | None) -> Iterator[None]:
        """`claim` and `release` around a block (a no-op without a key)."""
        if key is None:
            yield
            return
        self.claim(key)
        try:
            yield
        finally:
            self.release(key)


# Stored answers ----------------------------------------------------------------------

StoredOutcome = Outcome | Event


def encode(outcome: StoredOutcome) -> str:
    return json.dumps(encodable(outcome), separators=(",", ":"))


def encodable(outcome: StoredOutcome) -> dict[str, Any]:
    """The outcome as JSON-ready data (PostgreSQL's batch statement embeds it as is)."""
    if type(outcome) is Booking:  # the hot path's answer: spelt out, no introspection
        return {
            "kind": "booking",
            "id": outcome.id,
            "event_id": outcome.event_id,
            "section_id": outcome.section_id,
            "qty": outcome.qty,
            "unit_price_cents": outcome.unit_price_cents,
            "created_at": outcome.created_at.isoformat(),
            "status": outcome.status,
            "customer_id": outcome.customer_id,
            "hold_id": outcome.hold_id,
            "payment_reference": outcome.payment_reference,
            "cancelled_at": None
            if outcome.cancelled_at is None
            else outcome.cancelled_at.isoformat(),
        }
    return _encode(outcome)


def decode(stored: str) -> StoredOutcome:
    return _decode(json.loads(stored))


def _encode(outcome: Any) -> dict[str, Any]:
    if isinstance(outcome, BoxofficeError):
        return {
            "kind": "error",
            "type": type(outcome).__name__,
            "args": list(outcome.args),
            "state": outcome.__dict__,
        }
    if isinstance(outcome, Booking):
        return {"kind": "booking", **_fields(outcome)}
    if isinstance(outcome, Hold):
        return {
            "kind": "hold",
            **_fields(outcome),
            "items": [_fields(item) for item in outcome.items],
        }
    if isinstance(outcome, Confirmation):
        return {
            "kind": "confirmation",
            "hold": _encode(outcome.hold),
            "bookings": [_encode(b) for b in outcome.bookings],
        }
    if isinstance(outcome, Released):
        return {"kind": "released", "hold": _encode(outcome.hold)}
    if isinstance(outcome, Swept):
        return {"kind": "swept", "seats": outcome.seats}
    if isinstance(outcome, Event):
        return {
            "kind": "event",
            "id": outcome.id,
            "name": outcome.name,
            "created_at": outcome.created_at.isoformat(),
            "max_per_customer": outcome.max_per_customer,
            "organizer_id": outcome.organizer_id,
            "sections": [_fields(s) for s in outcome.sections],
        }
    raise TypeError(f"cannot store {type(outcome).__name__}")


def _fields(obj: Any) -> dict[str, Any]:
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name in obj.__slots__
        if not isinstance(value := getattr(obj, name), tuple)
    }


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _booking(data: dict[str, Any]) -> Booking:
    return Booking(
        **{
            **data,
            "created_at": datetime.fromisoformat(data["created_at"]),
            "cancelled_at": _when(data.get("cancelled_at")),
        }
    )


def _hold(data: dict[str, Any]) -> Hold:
    return Hold(
        **{
            **data,
            "items": tuple(HoldItem(**item) for item in data["items"]),
            "expires_at": datetime.fromisoformat(data["expires_at"]),
            "created_at": datetime.fromisoformat(data["created_at"]),
            "settled_at": _when(data.get("settled_at")),
        }
    )


def _error_types() -> dict[str, type[BoxofficeError]]:
    found: dict[str, type[BoxofficeError]] = {}
    pending: list[type[BoxofficeError]] = [BoxofficeError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def _decode(data: dict[str, Any]) -> StoredOutcome:
    kind = data.pop("kind")
    if kind == "error":
        error = rebuild_error(_error_types()[data["type"]], tuple(data["args"]), data["state"])
        return error
    if kind == "booking":
        return _booking(data)
    if kind == "hold":
        return _hold(data)
    if kind == "confirmation":
        data["hold"].pop("kind")
        return Confirmation(
            _hold(data["hold"]),
            tuple(_booking({k: v for k, v in b.items() if k != "kind"}) for b in data["bookings"]),
        )
    if kind == "released":
        data["hold"].pop("kind")
        return Released(_hold(data["hold"]))
    if kind == "swept":
        return Swept(data["seats"])
    if kind == "event":
        return Event(
            id=data["id"],
            name=data["name"],
            created_at=datetime.fromisoformat(data["created_at"]),
            max_per_customer=data["max_per_customer"],
            organizer_id=data.get("organizer_id"),  # stored before access control: none
            sections=[Section(**s) for s in data["sections"]],
        )
    raise ValueError(f"unknown stored outcome {kind!r}")


async def was_answered(database: Database, key: Idempotency) -> bool:
    """Whether a request with this idempotency key was answered and its answer kept: a
    retry of it is replayed by the batch, and checks made before the batch must let it by."""
    query = select(idempotency_keys.c.key).where(
        idempotency_keys.c.scope == key.scope, idempotency_keys.c.key == key.key
    )
    async with UnitOfWork(database, write=False) as uow:
        return (await uow.conn.execute(query)).first() is not None
