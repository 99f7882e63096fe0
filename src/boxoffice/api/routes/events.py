"""Events: anyone reads them; organizers create them and read their own audit trails."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from boxoffice.api.access import caller
from boxoffice.api.deps import (
    IDEMPOTENCY_KEY_DOC,
    ClockDep,
    DatabaseDep,
    PageDep,
    SeqPageDep,
    idempotency_key,
)
from boxoffice.api.operation_links import CREATED_EVENT, links
from boxoffice.api.problems import problem_responses
from boxoffice.api.request_ids import request_id
from boxoffice.api.routes.links import LINK_HEADER_DOC, set_next_link
from boxoffice.api.schemas import AuditRecordOut, EventIn, EventOut
from boxoffice.domain.access import Principal
from boxoffice.domain.errors import Forbidden
from boxoffice.domain.model import EventSpec, SectionSpec
from boxoffice.domain.money import to_cents
from boxoffice.services import audit as audit_service
from boxoffice.services import events as event_service
from boxoffice.services.idempotency import idempotency

router = APIRouter(tags=["events"])


def _spec(body: EventIn) -> EventSpec:
    return EventSpec(
        name=body.name,
        sections=tuple(
            SectionSpec(name=s.name, price_cents=to_cents(s.price), capacity=s.capacity)
            for s in body.sections
        ),
        max_per_customer=body.max_per_customer,
    )


def _owner(actor: Principal, requested: str | None) -> str | None:
    """The organizer a new event belongs to: an organizer key's own; an admin names one."""
    if actor.role == "organizer":
        if requested is not None and requested != actor.organizer_id:
            raise Forbidden("An organizer key creates events for its own organizer only.")
        return actor.organizer_id
    return requested


@router.post(
    "/events",
    status_code=201,
    response_model=EventOut,
    responses={**links(CREATED_EVENT), **problem_responses(400, 409, 413, 422, 503)},
    summary="Create an event with its sections",
    openapi_extra=IDEMPOTENCY_KEY_DOC,
)
async def create_event(
    body: EventIn,
    request: Request,
    response: Response,
    database: DatabaseDep,
    clock: ClockDep,
) -> EventOut:
    actor = caller(request, "organizer")
    organizer = _owner(actor, body.organizer_id)
    spec = _spec(body)
    key = idempotency(
        idempotency_key(request),
        scope=actor.idempotency_scope(),
        operation="create_event",
        request=body.model_dump(mode="json"),
    )
    in_flight = request.app.state.in_flight
    with in_flight.claimed(key):
        event = await event_service.create_event(
            database,
            spec,
            clock(),
            organizer_id=organizer,
            idempotency=key,
            request_id=request_id(request),
        )
    response.headers["Location"] = f"/events/{event.id}"
    return EventOut.of(event)


router.add_api_route(
    "/events/create",
    create_event,
    methods=["POST"],
    status_code=201,
    response_model=EventOut,
    responses={**links(CREATED_EVENT), **problem_responses(400, 409, 413, 422, 503)},
    summary="Create an event (the original API's path)",
    operation_id="create_event_legacy",
    openapi_extra=IDEMPOTENCY_KEY_DOC,
)


@router.get(
    "/events/{event_id}",
    response_model=EventOut,
    responses=problem_responses(404, 503),
    summary="An event with the live seats per section: remaining, held and sold",
)
async def get_event(event_id: str, database: DatabaseDep, clock: ClockDep) -> EventOut:
    return EventOut.of(await event_service.get_event(database, event_id, clock()))


@router.get(
    "/events",
    response_model=list[EventOut],
    responses={200: {"headers": LINK_HEADER_DOC}, **problem_responses(400, 503)},
    summary="Events, newest first, paginated",
)
async def list_events(
    request: Request, response: Response, database: DatabaseDep, page: PageDep, clock: ClockDep
) -> list[EventOut]:
    found = await event_service.list_events(database, clock(), limit=page.limit, cursor=page.cursor)
    set_next_link(request, response, found.next_cursor)
    return [EventOut.of(event) for event in found.items]


@router.get(
    "/events/{event_id}/audit",
    response_model=list[AuditRecordOut],
    responses={200: {"headers": LINK_HEADER_DOC}, **problem_responses(400, 404, 503)},
    summary="The event's audit trail, oldest first, paginated",
)
async def event_audit(
    event_id: str, request: Request, response: Response, database: DatabaseDep, page: SeqPageDep
) -> list[AuditRecordOut]:
    viewer = caller(request, "organizer")
    found = await audit_service.list_audit(
        database, event_id, viewer=viewer, limit=page.limit, cursor=page.cursor
    )
    set_next_link(request, response, found.next_cursor)
    return [AuditRecordOut.of(record) for record in found.items]
