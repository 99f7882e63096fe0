"""Organizer endpoints: create, read and list events."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from boxoffice.api.deps import DatabaseDep, PageDep
from boxoffice.api.problems import problem_responses
from boxoffice.api.routes.links import LINK_HEADER_DOC, set_next_link
from boxoffice.api.schemas import EventIn, EventOut
from boxoffice.domain.model import EventSpec, SectionSpec
from boxoffice.domain.money import to_cents
from boxoffice.services import events as event_service

router = APIRouter(tags=["events"])


def _spec(body: EventIn) -> EventSpec:
    return EventSpec(
        name=body.name,
        sections=tuple(
            SectionSpec(name=s.name, price_cents=to_cents(s.price), capacity=s.capacity)
            for s in body.sections
        ),
    )


@router.post(
    "/events",
    status_code=201,
    response_model=EventOut,
    responses=problem_responses(400, 413, 503),
    summary="Create an event with its sections",
)
async def create_event(body: EventIn, response: Response, database: DatabaseDep) -> EventOut:
    event = await event_service.create_event(database, _spec(body))
    response.headers["Location"] = f"/events/{event.id}"
    return EventOut.of(event)


router.add_api_route(
    "/events/create",
    create_event,
    methods=["POST"],
    status_code=201,
    response_model=EventOut,
    responses=problem_responses(400, 413, 503),
    summary="Create an event (the original API's path)",
    operation_id="create_event_legacy",
)


@router.get(
    "/events/{event_id}",
    response_model=EventOut,
    responses=problem_responses(404, 503),
    summary="An event with the live seats left per section",
)
async def get_event(event_id: str, database: DatabaseDep) -> EventOut:
    return EventOut.of(await event_service.get_event(database, event_id))


@router.get(
    "/events",
    response_model=list[EventOut],
    responses={200: {"headers": LINK_HEADER_DOC}, **problem_responses(400, 503)},
    summary="Events, newest first, paginated",
)
async def list_events(
    request: Request, response: Response, database: DatabaseDep, page: PageDep
) -> list[EventOut]:
    found = await event_service.list_events(database, limit=page.limit, cursor=page.cursor)
    set_next_link(request, response, found.next_cursor)
    return [EventOut.of(event) for event in found.items]
