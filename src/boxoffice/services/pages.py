"""Keyset pagination, newest first, with an opaque cursor.

A cursor is the (created_at, id) of the last item of a page, base64url-encoded
JSON. Keyset pages stay correct while rows are inserted between requests, and
cost the same on page 1 and page 10,000.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, or_

from boxoffice.domain.errors import InvalidRequest

T = TypeVar("T")

MAX_CURSOR_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.id.hex], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse a cursor from a client; anything we did not issue is a 400."""
        try:
            if len(token) > MAX_CURSOR_LENGTH:
                raise ValueError("too long")
            padded = token + "=" * (-len(token) % 4)
            created, ident = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            moment = datetime.fromisoformat(created)
            if moment.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(moment, uuid.UUID(hex=ident))
        except (ValueError, TypeError, binascii.Error, UnicodeError) as error:
            raise InvalidRequest("cursor is not valid.", field="cursor") from error

    def older_than(self, created_at: ColumnElement[Any], ident: ColumnElement[Any]) -> Any:
        """The WHERE clause selecting rows after this cursor in newest-first order."""
        return or_(
            created_at < self.created_at,
            and_(created_at == self.created_at, ident < self.id),
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def check_limit(limit: int, max_page_size: int) -> None:
    if not 1 <= limit <= max_page_size:
        raise InvalidRequest(f"limit must be between 1 and {max_page_size}.", field="limit")


@dataclass(frozen=True, slots=True)
class SeqCursor:
    """A cursor for lists read oldest first by a sequence number (the audit trail)."""

    seq: int

    def encode(self) -> str:
        return (
            base64.urlsafe_b64encode(json.dumps({"after": self.seq}).encode()).decode().rstrip("=")
        )

    @classmethod
    def decode(cls, token: str) -> SeqCursor:
        try:
            if len(token) > MAX_CURSOR_LENGTH:
                raise ValueError("too long")
            padded = token + "=" * (-len(token) % 4)
            seq = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))["after"]
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise ValueError("not a sequence number")
            return cls(seq)
        except (ValueError, TypeError, KeyError, binascii.Error, UnicodeError) as error:
            raise InvalidRequest("cursor is not valid.", field="cursor") from error
