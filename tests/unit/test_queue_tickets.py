"""Queue tickets and admission tokens: round trips, and every forgery refused."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boxoffice.domain.queue_tickets import (
    ADMISSION_PREFIX,
    TICKET_PREFIX,
    AdmissionToken,
    QueueTicket,
    TicketSigner,
)

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
EVENT = "0b8f5c2e-4a6d-4a51-9a43-1f2e3d4c5b6a"
OTHER_EVENT = "7d0c9b8a-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
NOW = datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC)

signer = TicketSigner(SECRET)
TICKET = QueueTicket(EVENT, "customer-42", 123_456_789, NOW)
TOKEN = AdmissionToken(EVENT, "customer-42", NOW + timedelta(minutes=10))


def body(text: str, prefix: str) -> bytes:
    b64 = text[len(prefix) :]
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))


def spell(prefix: str, raw: bytes) -> str:
    return prefix + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# Round trips ------------------------------------------------------------------------


def test_a_ticket_reads_back_as_signed_and_is_compact() -> None:
    text = signer.ticket(TICKET)
    assert text.startswith(TICKET_PREFIX)
    assert len(text) < 90
    assert signer.read_ticket(text) == TICKET
    assert signer.ticket(TICKET) == text  # joining again gives the same ticket back


@given(
    customer=st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 255),
    key=st.integers(0, 2**64 - 1),
    millis=st.integers(0, 2**41),
)
def test_any_ticket_round_trips(customer: str, key: int, millis: int) -> None:
    ticket = QueueTicket(
        EVENT, customer, key, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    )
    text = signer.ticket(ticket)
    assert signer.read_ticket(text) == ticket
    assert signer.read_admission_token(text) is None


def test_an_admission_token_admits_its_customer_in_its_event_until_it_ends() -> None:
    text = signer.admission_token(TOKEN)
    assert text.startswith(ADMISSION_PREFIX)
    assert signer.read_admission_token(text) == TOKEN
    assert signer.admits(text, event_id=EVENT, customer_id="customer-42", now=NOW)
    assert signer.admits(text, event_id=EVENT.upper(), customer_id="customer-42", now=NOW)


# Forgeries -----------------------------------------------------------------------


def test_a_tampered_payload_is_refused_bit_by_bit() -> None:
    text = signer.ticket(TICKET)
    raw = body(text, TICKET_PREFIX)
    for index in range(len(raw)):
        for bit in (0x01, 0x80):
            changed = bytearray(raw)
            changed[index] ^= bit
            assert signer.read_ticket(spell(TICKET_PREFIX, bytes(changed))) is None


def test_a_better_place_cannot_be_written_in() -> None:
    forged = TicketSigner(OTHER_SECRET).ticket(replace(TICKET, order_key=0))
    assert signer.read_ticket(forged) is None


def test_another_events_or_customers_payload_with_this_mac_is_refused() -> None:
    mac = body(signer.ticket(TICKET), TICKET_PREFIX)[-16:]
    for moved in (replace(TICKET, event_id=OTHER_EVENT), replace(TICKET, customer_id="c-43")):
        payload = body(TicketSigner(OTHER_SECRET).ticket(moved), TICKET_PREFIX)[:-16]
        assert signer.read_ticket(spell(TICKET_PREFIX, payload + mac)) is None


def test_truncated_garbage_and_respelled_tickets_are_refused() -> None:
    text = signer.ticket(TICKET)
    for bad in (
        "",
        TICKET_PREFIX,
        text[:-1],
        text[:-4],
        text[: len(TICKET_PREFIX) + 10],
        text + "A",
        text + "=",
        text.replace(TICKET_PREFIX, "wq2."),
        text[len(TICKET_PREFIX) :],
        "wq1.!!!!",
        "wq1." + "A" * 600,
        "not a ticket at all",
    ):
        assert signer.read_ticket(bad) is None, bad


def test_a_non_canonical_spelling_of_a_valid_ticket_is_refused() -> None:
    text = signer.ticket(replace(TICKET, customer_id="customer-4"))
    raw = body(text, TICKET_PREFIX)
    assert len(raw) % 3 != 0  # the last character carries unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(text[-1])
    respelled = text[:-1] + alphabet[last ^ 1]
    assert body(respelled, TICKET_PREFIX) == raw  # same bytes, another spelling
    assert signer.read_ticket(respelled) is None


def test_a_ticket_is_not_an_admission_token_nor_the_reverse() -> None:
    ticket = signer.ticket(TICKET)
    token = signer.admission_token(TOKEN)
    assert signer.read_admission_token(ADMISSION_PREFIX + ticket[len(TICKET_PREFIX) :]) is None
    assert signer.read_ticket(TICKET_PREFIX + token[len(ADMISSION_PREFIX) :]) is None
    assert not signer.admits(ticket, event_id=EVENT, customer_id="customer-42", now=NOW)


def test_an_admission_token_is_refused_when_forged_expired_or_moved() -> None:
    text = signer.admission_token(TOKEN)
    forged = TicketSigner(OTHER_SECRET).admission_token(TOKEN)
    ends = TOKEN.admitted_until
    assert not signer.admits(forged, event_id=EVENT, customer_id="customer-42", now=NOW)
    assert not signer.admits(text, event_id=EVENT, customer_id="customer-42", now=ends)
    assert signer.admits(
        text, event_id=EVENT, customer_id="customer-42", now=ends - timedelta(milliseconds=1)
    )
    assert not signer.admits(text, event_id=OTHER_EVENT, customer_id="customer-42", now=NOW)
    assert not signer.admits(text, event_id=EVENT, customer_id="customer-43", now=NOW)
    assert not signer.admits(text, event_id="not-an-id", customer_id="customer-42", now=NOW)
    assert not signer.admits(text[:-2], event_id=EVENT, customer_id="customer-42", now=NOW)


def test_a_longer_token_cannot_be_made_by_editing_the_time() -> None:
    raw = bytearray(body(signer.admission_token(TOKEN), ADMISSION_PREFIX))
    raw[16] ^= 0x01  # the high byte of admitted_until
    assert signer.read_admission_token(spell(ADMISSION_PREFIX, bytes(raw))) is None


# Keys -------------------------------------------------------------------------------


def test_a_retired_secret_is_still_read_and_new_ones_signed_with_the_current() -> None:
    old = TicketSigner(OTHER_SECRET).ticket(TICKET)
    rotated = TicketSigner(SECRET, retired=[OTHER_SECRET])
    assert rotated.read_ticket(old) == TICKET
    assert TicketSigner(OTHER_SECRET).read_ticket(rotated.ticket(TICKET)) is None
    assert signer.read_ticket(old) is None


def test_short_secrets_and_unsignable_values_are_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        TicketSigner(b"short")
    with pytest.raises(ValueError, match="secret"):
        TicketSigner(SECRET, retired=[b"short"])
    with pytest.raises(ValueError, match="event"):
        signer.ticket(replace(TICKET, event_id="nope"))
    with pytest.raises(ValueError, match="customer"):
        signer.ticket(replace(TICKET, customer_id=""))
    with pytest.raises(ValueError, match="customer"):
        signer.ticket(replace(TICKET, customer_id="x" * 256))
    with pytest.raises(ValueError, match="order key"):
        signer.ticket(replace(TICKET, order_key=-1))
    with pytest.raises(ValueError, match="time zone"):
        signer.ticket(replace(TICKET, issued_at=datetime(2026, 12, 1)))
