"""On-sale mode: an event's waiting room, joining its line, and polling a place in it.

    PUT/GET /events/{id}/waiting-room   organizer: settings, and the live figures
    POST    /events/{id}/queue          customer: one place per customer, a signed ticket
    GET     /queue/{ticket}             anyone holding the ticket: waiting, admitted, ...

A poll touches neither the database nor any shared state: it is answered from
the ticket (signed, so nobody forges a better place) and this process's view
of the line (services/room_watch.py). It needs no API key (the ticket is the
credential, and the admission token it may carry is good only with the
customer's own key), is not drawn on the read rate limit, and is paced per
ticket instead (domain/poll_pacing.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from fastapi import APIRouter, Request, Response
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from boxoffice.api.access import PRINCIPAL, caller
from boxoffice.api.deps import ClockDep, DatabaseDep
from boxoffice.api.fast_routes import JSON_CONTENT, FastRoute, route_named
from boxoffice.api.problems import problem_responses
from boxoffice.api.rate_limits import refused_credential
from boxoffice.api.schemas import QueueJoinIn, QueueTicketOut, WaitingRoomIn, WaitingRoomOut
from boxoffice.domain.access import Principal
from boxoffice.domain.errors import (
    InvalidRequest,
    PollTooSoon,
    QueueNotOpen,
    QueueTicketInvalid,
    Unauthorized,
)
from boxoffice.domain.poll_pacing import PollPacer
from boxoffice.domain.queue_order import (
    FIFO_BASE,
    NOBODY,
    RANDOM_BASE,
    PollAnswer,
    answer_poll,
    order_key,
)
from boxoffice.domain.queue_tickets import AdmissionToken, QueueTicket
from boxoffice.observability.metrics import QUEUE_JOINS, QUEUE_POLLS
from boxoffice.services import events as event_service
from boxoffice.services import waiting_room as room_service
from boxoffice.services.room_watch import RoomView, RoomWatch
from boxoffice.services.waiting_room import Joining

router = APIRouter(tags=["waiting room"])


def _watch(request: Request) -> RoomWatch:
    watch: RoomWatch = request.app.state.room_watch
    return watch


@router.put(
    "/events/{event_id}/waiting-room",
    response_model=WaitingRoomOut,
    responses=problem_responses(400, 404, 413, 503),
    summary="Turn the event's waiting room on, change it, pause it (suspended) or turn it off",
)
async def put_waiting_room(
    event_id: str, body: WaitingRoomIn, request: Request, database: DatabaseDep, clock: ClockDep
) -> WaitingRoomOut:
    actor = caller(request, "put_waiting_room")
    room = await room_service.put_room(database, event_id, body.settings(), actor, clock())
    await _watch(request).refresh()  # this process at once; the others within a refresh
    return WaitingRoomOut.of(room)


@router.get(
    "/events/{event_id}/waiting-room",
    response_model=WaitingRoomOut,
    responses=problem_responses(404, 503),
    summary="The event's waiting room: its settings and live figures",
)
async def get_waiting_room(
    event_id: str, request: Request, database: DatabaseDep
) -> WaitingRoomOut:
    actor = caller(request, "get_waiting_room")
    return WaitingRoomOut.of(await room_service.get_room(database, event_id, actor))


@router.post(
    "/events/{event_id}/queue",
    status_code=201,
    response_model=QueueTicketOut,
    responses=problem_responses(400, 404, 409, 413, 503),
    summary="Join the event's line: one place per customer, the same ticket every time",
)
async def join_queue(
    event_id: str, request: Request, response: Response, body: QueueJoinIn | None = None
) -> QueueTicketOut:
    answer = await join_line(
        request.app.state,
        request.scope.get(PRINCIPAL),
        event_id,
        None if body is None else body.customer_id,
    )
    response.headers["Location"] = ticket_location(answer)
    return answer


async def join_line(
    state: State, actor: Principal | None, event_id: str, named: str | None
) -> QueueTicketOut:
    """The caller's place in the event's line (the one it has, or a new one), as a ticket
    and its first answer; raises the refusals. The route and `FAST_JOIN` both call it."""
    if actor is None:  # a path the key check took for public: never, but never silently
        raise Unauthorized()
    actor.require("join_queue")
    customer = actor.customer_for(named)
    if customer is None:
        raise InvalidRequest("customerId is needed to join a line.", field="customerId")
    watch: RoomWatch = state.room_watch
    view = watch.view(event_id) or await watch.load(event_id)
    now = state.clock()
    if view is None:
        await event_service.get_event(state.database, event_id, now)  # 404 if there is none
        raise QueueNotOpen("This event has no waiting room on: book directly.")
    key = _order_key(watch, view, now)
    room = view.room
    key, joined_at = await watch.joiner.join(Joining(room.event_id, customer, key, now))
    ticket = watch.signer.ticket(QueueTicket(room.event_id, customer, key, joined_at))
    answer = answer_poll(key, view.snapshot, now)
    pacer: PollPacer = state.poll_pacer
    pacer.told(ticket, now.timestamp(), answer.poll_after_seconds)
    QUEUE_JOINS.inc()
    return _ticket_out(watch, ticket, room.event_id, customer, answer)


def _order_key(watch: RoomWatch, view: RoomView, now: datetime) -> int:
    """Where a customer joining now goes: drawn at random in the pre-queue (the shuffle),
    by arrival after opening (fifo), or at random among those still waiting."""
    settings = view.room.settings
    phase = settings.phase(now)
    if phase == "closed":
        opens = settings.prequeue_opens_at or settings.opens_at
        raise QueueNotOpen(
            "The line for this event is not open yet.",
            opens_at=None if opens is None else opens.isoformat(),
        )
    if settings.queueing_method == "reject":
        raise QueueNotOpen("This event's line takes nobody new now.")
    watermark = view.snapshot.watermark.key
    if phase == "prequeue" and watermark == NOBODY:
        return order_key("prequeue", sequence=0, watermark=watermark)
    if settings.queueing_method == "random":
        return order_key("random", sequence=0, watermark=watermark)
    micros = (now - view.room.line_epoch) // timedelta(microseconds=1)
    arrived = watch.arrival(view.room.event_id, max(0, micros))
    key = order_key("fifo", sequence=arrived, watermark=watermark)
    if FIFO_BASE <= watermark < RANDOM_BASE - 1:
        # A clock that runs late must not put a newcomer among those let in already.
        key = max(key, watermark + 1)
    return key


@router.get(
    "/queue/{ticket}",
    response_model=QueueTicketOut,
    responses=problem_responses(404, 429),
    summary="Your place in line: waiting, admitted (with the admission token), expired or "
    "sold out; poll again after pollAfterSeconds",
)
async def poll_queue(ticket: str, request: Request) -> QueueTicketOut:
    return poll_answer(request.app.state, ticket)


def poll_answer(state: State, ticket: str) -> QueueTicketOut:
    """What a poll of `ticket` is told now; raises `PollTooSoon` or `QueueTicketInvalid`."""
    pacer: PollPacer = state.poll_pacer
    now = state.clock()
    moment = now.timestamp()
    pacer.check(ticket, moment)
    watch: RoomWatch = state.room_watch
    place = watch.signer.read_ticket(ticket)
    if place is None:
        raise QueueTicketInvalid()
    view = watch.view(place.event_id)
    if view is None:
        # The room is off: nobody needs a token to buy; a token is given all the same.
        until = now + timedelta(hours=1)
        answer = PollAnswer("admitted", watch.max_poll_seconds, admitted_until=until)
    else:
        answer = answer_poll(place.order_key, view.snapshot, now)
    pacer.told(ticket, moment, answer.poll_after_seconds)
    QUEUE_POLLS.inc((answer.status,))
    return _ticket_out(watch, ticket, place.event_id, place.customer_id, answer)


POLL_PREFIX = "/queue/"


class PollFastPath:
    """GET /queue/{ticket} answered before the key check, the rate limits and FastAPI.

    The request a million people repeat needs none of them: no key (the ticket is
    the credential), no rate limit (polls are paced per ticket), no body, no
    dependency. Answering it here, straight from `poll_answer`, skips what the
    stack costs every request (`make onsale`, docs/performance.md). Anything but
    an on-time poll of a valid ticket without an Authorization header goes on to
    the route, which answers it (404, 429, a key's 401) as it always did; the
    request id, the counting and the server's security headers are outside this.

    A ticket not signed by this service is a guessed credential, as a refused
    key is: it is counted against its address's failed-authentication quota
    (RATE_LIMIT_AUTH_FAILURES), past which the address gets 429 for forged
    tickets, while its valid tickets are still answered (one guesser behind a
    shop's shared address must not stop its customers' polls).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith(POLL_PREFIX)
        ):
            try:
                body = poll_body(scope["app"].state, scope["path"], scope["headers"])
            except QueueTicketInvalid:
                if await refused_credential(scope, send):
                    return
                body = None  # the route's 404
            if body is not None:
                scope["route"] = POLL_ROUTE
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [JSON_CONTENT, (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


POLL_ROUTE = route_named(router, "poll_queue")


def poll_body(state: State, path: str, headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The answer to an on-time poll of a valid ticket (`path` is /queue/{ticket}), or
    None for the route to give; raises `QueueTicketInvalid` for a ticket this service did
    not sign. Shared by `PollFastPath` and the server's protocol (api/http_protocol.py)."""
    ticket = path[len(POLL_PREFIX) :]
    if not ticket or "/" in ticket or state.room_watch is None:
        return None
    for name, _ in headers:
        if name == b"authorization":
            return None  # a key is checked, valid or not, as on every route
    try:
        answer = poll_answer(state, ticket)
    except PollTooSoon:
        return None  # nothing was changed: the route raises the same, as a problem
    return answer.__pydantic_serializer__.to_json(answer)


async def _fast_join(
    request: Request, body: QueueJoinIn | None, params: tuple[str, ...]
) -> QueueTicketOut:
    return await join_line(
        request.app.state,
        request.scope.get(PRINCIPAL),
        params[0],
        None if body is None else body.customer_id,
    )


def ticket_location(answer: QueueTicketOut) -> str:
    return f"/queue/{answer.ticket}"


FAST_JOIN = FastRoute(
    router,
    "join_queue",
    re.compile(r"/events/([^/]+)/queue"),
    QueueJoinIn,
    False,
    _fast_join,
    location=ticket_location,
)


def _ticket_out(
    watch: RoomWatch, ticket: str, event_id: str, customer: str, answer: PollAnswer
) -> QueueTicketOut:
    token = (
        None
        if answer.admitted_until is None
        else watch.signer.admission_token(AdmissionToken(event_id, customer, answer.admitted_until))
    )
    return QueueTicketOut(
        ticket=ticket,
        event_id=event_id,
        status=answer.status,
        position=answer.position,
        estimated_wait_seconds=answer.estimated_wait_seconds,
        poll_after_seconds=answer.poll_after_seconds,
        admission_token=token,
        admitted_until=answer.admitted_until,
    )
