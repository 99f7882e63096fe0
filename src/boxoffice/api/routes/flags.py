"""Fraud flags: an event's for its organizer, all of them for admins (`domain/fraud.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from boxoffice.api.access import caller
from boxoffice.api.deps import DatabaseDep, SeqPageDep
from boxoffice.api.problems import problem_responses
from boxoffice.api.routes.links import LINK_HEADER_DOC, set_next_link
from boxoffice.api.schemas import CustomerId, FlagOut
from boxoffice.domain.fraud import Rule
from boxoffice.services import flags as flag_service

router = APIRouter(tags=["flags"])


@router.get(
    "/events/{event_id}/flags",
    response_model=list[FlagOut],
    responses={200: {"headers": LINK_HEADER_DOC}, **problem_responses(400, 404, 503)},
    summary="The event's fraud flags, oldest first, paginated (its organizer, admins)",
)
async def event_flags(
    event_id: str, request: Request, response: Response, database: DatabaseDep, page: SeqPageDep
) -> list[FlagOut]:
    viewer = caller(request, "event_flags")
    found = await flag_service.list_flags(
        database,
        viewer=viewer,
        event_id=event_id,
        rule=None,
        customer_id=None,
        limit=page.limit,
        cursor=page.cursor,
    )
    set_next_link(request, response, found.next_cursor)
    return [FlagOut.of(flag) for flag in found.items]


@router.get(
    "/flags",
    response_model=list[FlagOut],
    responses={200: {"headers": LINK_HEADER_DOC}, **problem_responses(400, 503)},
    summary="Every fraud flag, oldest first, paginated (admins)",
)
async def all_flags(
    request: Request,
    response: Response,
    database: DatabaseDep,
    page: SeqPageDep,
    rule: Annotated[Rule | None, Query(description="Only this rule's flags.")] = None,
    customer_id: Annotated[
        CustomerId | None, Query(alias="customerId", description="Only this customer's flags.")
    ] = None,
) -> list[FlagOut]:
    viewer = caller(request, "all_flags")
    found = await flag_service.list_flags(
        database,
        viewer=viewer,
        event_id=None,
        rule=rule,
        customer_id=customer_id,
        limit=page.limit,
        cursor=page.cursor,
    )
    set_next_link(request, response, found.next_cursor)
    return [FlagOut.of(flag) for flag in found.items]
