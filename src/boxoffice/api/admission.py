"""The waiting room's gate on purchases: the `Admission-Token` header, checked.

One dict lookup for an event without a room on, so `/book` and `/holds` pay
next to nothing for it outside a sale.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from boxoffice.api.deps import IDEMPOTENCY_KEY_DOC, header
from boxoffice.domain.access import Principal
from boxoffice.domain.errors import AdmissionInvalid, AdmissionRequired
from boxoffice.services.room_watch import RoomWatch

ADMISSION_TOKEN_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "Admission-Token",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": 512},
            "description": "While the event's waiting room is on: the token your queue "
            "ticket gave you once admitted (403 admission_required without it).",
        }
    ]
}


# What a purchase reads from its headers, declared for the OpenAPI document.
PURCHASE_HEADERS_DOC: dict[str, Any] = {
    "parameters": [*IDEMPOTENCY_KEY_DOC["parameters"], *ADMISSION_TOKEN_DOC["parameters"]]
}


def check_admission(
    request: Request, event_id: str, customer: str | None, actor: Principal
) -> None:
    """While the event's waiting room is on, a purchase needs the customer's admission
    token: 403 admission_required without one, admission_invalid for a bad one. Staff
    keys (a box office, the shop's back office) sell without one."""
    watch: RoomWatch | None = request.app.state.room_watch
    if watch is None:
        return
    view = watch.view(event_id)
    if view is None or not view.gates_purchases:
        return
    if actor.key_id is not None and actor.is_staff:
        return
    token = header(request, b"admission-token")
    if token is None:
        raise AdmissionRequired(view.room.event_id)
    if customer is None or not watch.signer.admits(
        token, event_id=view.room.event_id, customer_id=customer, now=request.app.state.clock()
    ):
        raise AdmissionInvalid()
