"""Events: anyone reads them; organizers create them and read their own audit trails.

`GET /events/{id}` is what everyone refreshes during a sale. It is answered
from the process's availability cache (services/availability.py), at most
AVAILABILITY_MAX_STALENESS_MS old, with a strong ETag (a digest of the body:
the bytes are ours, serialized once per read) and `Cache-Control: public,
max-age=N, must-revalidate`, N the whole seconds left of that bound: a browser
or CDN that keeps the answer never shows it older than the server would. With
the default 500 ms that is `max-age=0`: caches keep the answer but ask again,
and If-None-Match gets a 304 without a body. An unknown event's 404 is never
kept (docs/architecture.md, "Read storms").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from boxoffice.api.access import caller
from boxoffice.api.deps import (
    IDEMPOTENCY_KEY_DOC,
    ClockDep,
    DatabaseDep,
    PageDep,
    SeqPageDep,
    header,
    idempotency_key,
)
from boxoffice.api.operation_links import CREATED_EVENT, links
from boxoffice.api.problems import problem_responses
from boxoffice.api.request_ids import request_id
from boxoffice.api.routes.links import LINK_HEADER_DOC, set_next_link
from boxoffice.api.schemas import AuditRecordOut, EventIn, EventOut
from boxoffice.db.database import Database
from boxoffice.domain.access import Principal
from boxoffice.domain.errors import EventNotFound, Forbidden
from boxoffice.domain.ids import cached_canonical_id
from boxoffice.domain.model import EventSpec, SectionSpec
from boxoffice.domain.money import to_cents
from boxoffice.services import audit as audit_service
from boxoffice.services import events as event_service
from boxoffice.services.availability import AvailabilityCache
from boxoffice.services.clock import Clock
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
    return await _create(request, "create_event", body, response, database, clock)


async def create_event_legacy(
    body: EventIn,
    request: Request,
    response: Response,
    database: DatabaseDep,
    clock: ClockDep,
) -> EventOut:
    return await _create(request, "create_event_legacy", body, response, database, clock)


async def _create(
    request: Request,
    operation: str,
    body: EventIn,
    response: Response,
    database: Database,
    clock: Clock,
) -> EventOut:
    """Either path's event, under its own operation's permission; one idempotency
    operation for both, so a retry on the other path replays."""
    actor = caller(request, operation)
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
    create_event_legacy,
    methods=["POST"],
    status_code=201,
    response_model=EventOut,
    responses={**links(CREATED_EVENT), **problem_responses(400, 409, 413, 422, 503)},
    summary="Create an event (the original API's path)",
    operation_id="create_event_legacy",
    openapi_extra=IDEMPOTENCY_KEY_DOC,
)


@dataclass(frozen=True, slots=True)
class EventAnswer:
    """An event's availability as `GET /events/{id}` sends it: the JSON body, its ETag."""

    body: bytes
    etag: str  # strong, quoted: a digest of `body`


async def read_event_answer(database: Database, event_id: str, now: datetime) -> EventAnswer:
    """The event's answer as read from the database now (what the availability cache keeps)."""
    event = await event_service.get_event(database, event_id, now)
    # The bytes FastAPI itself would send for EventOut (tested: tests/api/test_event_reads.py).
    body = EventOut.of(event).model_dump_json(by_alias=True).encode()
    return EventAnswer(body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"')


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's If-None-Match: `*`, or a list of tags compared weakly (W/ ignored)."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


EVENT_READ_HEADERS_DOC = {
    "ETag": {
        "description": "The answer's entity tag: send it back in If-None-Match to get 304.",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "`public, max-age=N, must-revalidate`: N whole seconds of the "
        "AVAILABILITY_MAX_STALENESS_MS left to the answer (often 0); `no-store` when the "
        "cache is off.",
        "schema": {"type": "string"},
    },
}
IF_NONE_MATCH_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "ETags of answers the client has: 304, no body, if the event's "
            "answer is still one of them.",
        }
    ]
}


@router.get(
    "/events/{event_id}",
    response_model=EventOut,
    responses={
        200: {"headers": EVENT_READ_HEADERS_DOC},
        304: {
            "description": "Not Modified: the answer is still the one If-None-Match names.",
            "headers": EVENT_READ_HEADERS_DOC,
        },
        **problem_responses(404, 503),
    },
    summary="An event with its seats per section: remaining, held and sold, at most "
    "AVAILABILITY_MAX_STALENESS_MS old",
    openapi_extra=IF_NONE_MATCH_DOC,
)
async def get_event(event_id: str, request: Request) -> Response | EventOut:
    # What everyone refreshes during a sale: app state taken straight, no dependencies.
    state = request.app.state
    clock: Clock = state.clock
    cache: AvailabilityCache[EventAnswer] | None = state.availability
    if cache is None:  # AVAILABILITY_MAX_STALENESS_MS=0: read live, as it always was
        return EventOut.of(await event_service.get_event(state.database, event_id, clock()))
    canonical = cached_canonical_id(event_id)
    if canonical is None:
        raise EventNotFound(event_id)
    entry = await cache.get(canonical)
    answer = entry.value
    # Browsers and CDNs may keep it for what is left of its staleness bound, never longer.
    left = cache.max_staleness - (clock() - entry.read_at)
    headers = {
        "ETag": answer.etag,
        "Cache-Control": f"public, max-age={max(0, int(left.total_seconds()))}, must-revalidate",
    }
    if _matches(header(request, b"if-none-match"), answer.etag):
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type="application/json", headers=headers)


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
    viewer = caller(request, "event_audit")
    found = await audit_service.list_audit(
        database, event_id, viewer=viewer, limit=page.limit, cursor=page.cursor
    )
    set_next_link(request, response, found.next_cursor)
    return [AuditRecordOut.of(record) for record in found.items]
