"""Signed queue tickets and admission tokens: a place in line nobody can forge.

    ticket           wq1.<base64url(payload ‖ mac)>   event, customer, order key, issued at
    admission token  wa1.<base64url(payload ‖ mac)>   event, customer, admitted until

A poll (`GET /queue/{ticket}`) is answered from the ticket and the event's
watermark alone, without the database: everything it needs is in the ticket,
and the MAC is what makes it trustworthy. The MAC is HMAC-SHA256 over the
prefix and the payload, truncated to 128 bits (RFC 2104 allows truncation to
half the hash; 2^128 guesses is out of reach), and compared in constant time.
The prefix is under the MAC too, so a ticket cannot pass for an admission
token or the other way round, and a later format (`wq2.`) cannot be confused
with this one.

Payloads are packed binary, not JSON, to keep a ticket about 70 characters:
the event's UUID as 16 bytes, times as milliseconds since the epoch, the
order key as 64 bits, and the customer id (UTF-8, at most 255 bytes) last.

The secret is passed in, never a constant here. Keys rotate by signing with a
new secret while still accepting the `retired` ones until every ticket signed
with them has been replaced (a sale's length). Only canonical base64url is
accepted, so one ticket has exactly one spelling: a per-ticket rate limit
cannot be escaped by re-spelling it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from boxoffice.domain.ids import parse_id

__all__ = [
    "ADMISSION_PREFIX",
    "MIN_SECRET_BYTES",
    "TICKET_PREFIX",
    "AdmissionToken",
    "QueueTicket",
    "TicketSigner",
]

TICKET_PREFIX = "wq1."
ADMISSION_PREFIX = "wa1."
MIN_SECRET_BYTES = 32
MAC_BYTES = 16
MAX_CUSTOMER_BYTES = 255
MAX_TEXT_LENGTH = 512  # longer than any token we sign: refused before decoding
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_TICKET = struct.Struct(">16sQq")  # event, order key, issued at (ms)
_ADMISSION = struct.Struct(">16sq")  # event, admitted until (ms)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class QueueTicket:
    """One customer's place in one event's line."""

    event_id: str  # canonical UUID
    customer_id: str
    order_key: int  # 0 <= key < 2^64; lower goes first
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class AdmissionToken:
    """Leave to book and hold in one event, for one customer, until a moment."""

    event_id: str
    customer_id: str
    admitted_until: datetime

    def valid_at(self, now: datetime) -> bool:
        return now < self.admitted_until


class TicketSigner:
    """Signs and reads tickets and admission tokens under one secret (and retired ones)."""

    def __init__(self, secret: bytes, *, retired: Sequence[bytes] = ()) -> None:
        for key in (secret, *retired):
            if len(key) < MIN_SECRET_BYTES:
                raise ValueError(f"a signing secret needs at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._accepted = (secret, *retired)

    # Tickets --------------------------------------------------------------------------

    def ticket(self, ticket: QueueTicket) -> str:
        if not 0 <= ticket.order_key < 2**64:
            raise ValueError("an order key is a 64-bit unsigned integer")
        payload = _TICKET.pack(
            _event_bytes(ticket.event_id), ticket.order_key, _millis(ticket.issued_at)
        )
        return self._sign(TICKET_PREFIX, payload + _customer_bytes(ticket.customer_id))

    def read_ticket(self, text: str) -> QueueTicket | None:
        """The ticket `text` carries, or None if it is not one we signed, unchanged."""
        payload = self._open(TICKET_PREFIX, text, _TICKET.size)
        if payload is None:
            return None
        event, order_key, issued = _TICKET.unpack_from(payload)
        customer = _customer(payload[_TICKET.size :])
        if customer is None:
            return None
        return QueueTicket(str(uuid.UUID(bytes=event)), customer, order_key, _moment(issued))

    # Admission tokens -----------------------------------------------------------------

    def admission_token(self, token: AdmissionToken) -> str:
        payload = _ADMISSION.pack(_event_bytes(token.event_id), _millis(token.admitted_until))
        return self._sign(ADMISSION_PREFIX, payload + _customer_bytes(token.customer_id))

    def read_admission_token(self, text: str) -> AdmissionToken | None:
        """The admission token `text` carries, expired or not; None if it is not ours."""
        payload = self._open(ADMISSION_PREFIX, text, _ADMISSION.size)
        if payload is None:
            return None
        event, until = _ADMISSION.unpack_from(payload)
        customer = _customer(payload[_ADMISSION.size :])
        if customer is None:
            return None
        return AdmissionToken(str(uuid.UUID(bytes=event)), customer, _moment(until))

    def admits(self, text: str, *, event_id: str, customer_id: str, now: datetime) -> bool:
        """Whether `text` is a token we signed letting `customer_id` into `event_id` at `now`:
        forged, expired, another customer's or another event's, it is not."""
        token = self.read_admission_token(text)
        event = parse_id(event_id)
        return (
            token is not None
            and event is not None
            and token.event_id == str(event)
            and hmac.compare_digest(token.customer_id.encode(), customer_id.encode())
            and token.valid_at(now)
        )

    # The envelope ---------------------------------------------------------------------

    def _sign(self, prefix: str, payload: bytes) -> str:
        mac = _mac(self._secret, prefix, payload)
        return prefix + base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")

    def _open(self, prefix: str, text: str, fixed: int) -> bytes | None:
        if len(text) > MAX_TEXT_LENGTH or not text.startswith(prefix):
            return None
        body = text[len(prefix) :]
        if not _BASE64URL.fullmatch(body):
            return None
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
            return None  # not the one spelling we issue
        if len(raw) < fixed + 1 + MAC_BYTES:
            return None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        # Every accepted secret is tried, so the time taken does not tell which one matched.
        matched = False
        for secret in self._accepted:
            matched |= hmac.compare_digest(mac, _mac(secret, prefix, payload))
        return payload if matched else None


def _mac(secret: bytes, prefix: str, payload: bytes) -> bytes:
    return hmac.new(secret, prefix.encode("ascii") + payload, hashlib.sha256).digest()[:MAC_BYTES]


def _event_bytes(event_id: str) -> bytes:
    event = parse_id(event_id)
    if event is None:
        raise ValueError(f"not an event id: {event_id!r}")
    return event.bytes


def _customer_bytes(customer_id: str) -> bytes:
    raw = customer_id.encode("utf-8")
    if not 1 <= len(raw) <= MAX_CUSTOMER_BYTES:
        raise ValueError(f"a customer id takes 1 to {MAX_CUSTOMER_BYTES} bytes")
    return bytes([len(raw)]) + raw


def _customer(tail: bytes) -> str | None:
    if not tail or tail[0] != len(tail) - 1 or tail[0] == 0:
        return None
    try:
        return tail[1:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _millis(moment: datetime) -> int:
    if moment.utcoffset() is None:
        raise ValueError("a signed moment must carry a time zone")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _moment(millis: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=millis)
