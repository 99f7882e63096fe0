"""What the HTTP edge tells the fraud watch (`services/flags.py`): purchases that went
through, and refusals a careful client rarely meets. Nothing here refuses anything."""

from __future__ import annotations

import re

from starlette.types import Scope

from boxoffice.domain.access import Principal
from boxoffice.domain.fraud import Caller
from boxoffice.services.flags import FlagDesk

# Refusals worth counting: a client that meets them again and again is probing, guessing
# or hammering a sold-out section. Expired or already-confirmed holds are ordinary.
SUSPICIOUS_CODES = frozenset(
    {
        "insufficient_seats",
        "customer_limit_exceeded",
        "active_hold_limit",
        "hold_churn_limit",
        "not_found",
        "forbidden",
        "unauthorized",
        "rate_limited",
    }
)
_EVENT_IN_PATH = re.compile(r"/events/([0-9A-Fa-f-]{32,36})(?:/|$)")


def peer_address(scope: Scope) -> str | None:
    """The client's address as the server saw it (or as a trusted proxy named it)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def caller_of(scope: Scope, customer_id: str | None = None) -> Caller:
    principal: Principal | None = scope.get("boxoffice.principal")
    return Caller(
        key_id=None if principal is None else principal.key_id,
        customer_id=customer_id
        if customer_id is not None
        else (None if principal is None else principal.customer_id),
        address=peer_address(scope),
    )


def watch_refusal(scope: Scope, code: str) -> None:
    """Count a refusal against its caller (from middleware or an error handler)."""
    flags: FlagDesk | None = scope["app"].state.flags
    if flags is None or code not in SUSPICIOUS_CODES:
        return
    found = _EVENT_IN_PATH.match(scope.get("path", ""))
    event_id = None if found is None else found.group(1).lower()
    flags.refusal(scope["app"].state.clock(), caller_of(scope), code, event_id)
