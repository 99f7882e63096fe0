"""Checkout: hold seats while the customer pays, then confirm, or release them."""

from __future__ import annotations

import re
from datetime import datetime

from fastapi import APIRouter, Request, Response

from boxoffice.api.access import caller
from boxoffice.api.admission import PURCHASE_HEADERS_DOC, check_admission
from boxoffice.api.deps import (
    IDEMPOTENCY_KEY_DOC,
    BookerDep,
    ClockDep,
    DatabaseDep,
    idempotency_key,
)
from boxoffice.api.fast_routes import FastRoute, with_body
from boxoffice.api.fraud import caller_of
from boxoffice.api.operation_links import CONFIRMED_HOLD, PLACED_HOLD, links
from boxoffice.api.problems import problem_responses
from boxoffice.api.request_ids import request_id
from boxoffice.api.schemas import ConfirmationOut, ConfirmIn, HoldIn, HoldOut
from boxoffice.booking import Booker
from boxoffice.config import Settings
from boxoffice.domain.commands import (
    Confirmation,
    ConfirmHold,
    HoldItemRequest,
    Idempotency,
    PlaceHold,
    ReleaseHold,
)
from boxoffice.domain.errors import ActiveHoldLimit, HoldChurnLimit, InvalidRequest
from boxoffice.domain.hold_caps import HoldCaps, HoldRecord, check_hold_caps
from boxoffice.domain.model import Hold
from boxoffice.services import holds as hold_service
from boxoffice.services.clock import Clock
from boxoffice.services.coalesced import Coalesced
from boxoffice.services.flags import FlagDesk
from boxoffice.services.idempotency import idempotency, was_answered

router = APIRouter(tags=["holds"])


@router.post(
    "/holds",
    status_code=201,
    response_model=HoldOut,
    responses={**links(PLACED_HOLD), **problem_responses(400, 403, 404, 409, 413, 422, 429, 503)},
    summary="Hold seats in one or more sections of an event: every item, or none",
    openapi_extra=PURCHASE_HEADERS_DOC,
)
async def place_hold(body: HoldIn, request: Request, response: Response) -> HoldOut:
    # Answered by FAST_HOLD below FastAPI; this route answers what that does not read.
    hold = await hold_seats(request, body)
    response.headers["Location"] = hold_location(hold)
    return hold


async def hold_seats(request: Request, body: HoldIn) -> HoldOut:
    """Holds every item of `body` for the caller, or none; raises the refusals."""
    # What it needs comes straight from app state: resolving dependencies cost more.
    state = request.app.state
    booker: Booker = state.booker
    settings: Settings = state.settings
    clock: Clock = state.clock
    actor = caller(request, "place_hold")
    customer = actor.customer_for(body.customer_id)
    check_admission(request, body.event_id, customer, actor)
    ttl = settings.hold_ttl_seconds if body.ttl_seconds is None else body.ttl_seconds
    if not settings.hold_ttl_min_seconds <= ttl <= settings.hold_ttl_max_seconds:
        raise InvalidRequest(
            f"ttlSeconds must be between {settings.hold_ttl_min_seconds} and "
            f"{settings.hold_ttl_max_seconds}.",
            field="ttlSeconds",
        )
    given = idempotency_key(request)
    key = (  # the request's fingerprint is made only when a key asks for it
        None
        if given is None
        else idempotency(
            given,
            scope=actor.idempotency_scope(customer),
            operation="hold",
            request={**body.model_dump(), "customer_id": customer},
        )
    )
    flags: FlagDesk | None = state.flags
    if customer is not None and (settings.hold_caps.any or flags is not None):
        await check_caps(request, settings.hold_caps, customer, key, body.event_id, clock())
    hold = await booker.submit(
        PlaceHold(
            body.event_id,
            tuple(HoldItemRequest(item.section_id, item.qty) for item in body.items),
            ttl,
            customer,
            key,
            request_id(request),
            actor,
        )
    )
    assert isinstance(hold, Hold)
    if flags is not None:
        flags.purchase(
            hold.created_at,
            caller_of(request.scope, customer),
            hold.event_id,
            hold.qty,
            settings.max_tickets_per_booking,
        )
    return HoldOut.of(hold, clock())


def hold_location(hold: HoldOut) -> str:
    return f"/holds/{hold.id}"


FAST_HOLD = FastRoute(
    router,
    "place_hold",
    re.compile("/holds"),
    HoldIn,
    True,
    with_body(hold_seats),
    location=hold_location,
)


async def check_caps(
    request: Request,
    caps: HoldCaps,
    customer: str,
    key: Idempotency | None,
    event_id: str,
    now: datetime,
) -> None:
    """The customer's hold caps (`domain/hold_caps.py`), read before the hold is queued;
    the same record tells the fraud watch about hold churn.

    Read, not locked: parallel holds of one customer may pass the count together, at
    most as many as its purchase rate limit lets through at once. The retry of a hold
    that was placed is let by, for the batch to replay its answer.
    """
    records: Coalesced[str, HoldRecord] = request.app.state.hold_records
    record = await records.get(customer)  # read with other customers' (services/coalesced.py)
    flags: FlagDesk | None = request.app.state.flags
    if flags is not None:
        flags.hold_churn(now, caller_of(request.scope, customer), event_id, record.churned)
    try:
        check_hold_caps(caps, record, now)
    except (ActiveHoldLimit, HoldChurnLimit):
        if key is None or not await was_answered(request.app.state.database, key):
            raise


@router.get(
    "/holds/{hold_id}",
    response_model=HoldOut,
    responses=problem_responses(404, 503),
    summary="One hold, with its status as of now",
)
async def get_hold(
    hold_id: str, request: Request, database: DatabaseDep, clock: ClockDep
) -> HoldOut:
    viewer = caller(request, "get_hold")
    return HoldOut.of(await hold_service.get_hold(database, hold_id, viewer), clock())


@router.post(
    "/holds/{hold_id}/confirm",
    status_code=201,
    response_model=ConfirmationOut,
    responses={**links(CONFIRMED_HOLD), **problem_responses(400, 404, 409, 413, 422, 503)},
    summary="Confirm an active hold: one booking per item, with your payment reference",
    openapi_extra=IDEMPOTENCY_KEY_DOC,
)
async def confirm_hold(
    hold_id: str, request: Request, body: ConfirmIn | None = None
) -> ConfirmationOut:
    # Answered by FAST_CONFIRM below FastAPI; this route answers what that does not read.
    return await confirm(request, hold_id, body)


async def confirm(request: Request, hold_id: str, body: ConfirmIn | None) -> ConfirmationOut:
    """Confirms the caller's hold into bookings, at most once; raises the refusals."""
    booker: Booker = request.app.state.booker
    clock: Clock = request.app.state.clock
    actor = caller(request, "confirm_hold")
    reference = None if body is None else body.payment_reference
    key = idempotency(
        idempotency_key(request),
        scope=actor.idempotency_scope(),
        operation="confirm",
        request={"holdId": hold_id, "paymentReference": reference},
    )
    confirmation = await booker.submit(
        ConfirmHold(hold_id, reference, key, request_id(request), actor)
    )
    assert isinstance(confirmation, Confirmation)
    return ConfirmationOut.of(confirmation, clock())


async def _fast_confirm(
    request: Request, body: ConfirmIn | None, params: tuple[str, ...]
) -> ConfirmationOut:
    return await confirm(request, params[0], body)


FAST_CONFIRM = FastRoute(
    router, "confirm_hold", re.compile("/holds/([^/]+)/confirm"), ConfirmIn, False, _fast_confirm
)


@router.delete(
    "/holds/{hold_id}",
    status_code=204,
    responses=problem_responses(404, 409, 503),
    summary="Release a hold: its seats are free again at once (releasing twice is harmless)",
)
async def release_hold(hold_id: str, request: Request, booker: BookerDep) -> Response:
    actor = caller(request, "release_hold")
    await booker.submit(ReleaseHold(hold_id, request_id=request_id(request), actor=actor))
    return Response(status_code=204)
