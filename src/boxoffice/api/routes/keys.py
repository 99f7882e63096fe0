"""Key management over HTTP, for admins: make a key (shown once), list keys, revoke one."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from boxoffice.api.access import caller
from boxoffice.api.deps import ClockDep, DatabaseDep
from boxoffice.api.problems import problem_responses
from boxoffice.api.schemas import KeyIn, KeyOut, NewKeyOut
from boxoffice.services import keys as key_service

router = APIRouter(tags=["keys"])


@router.post(
    "/keys",
    status_code=201,
    response_model=NewKeyOut,
    responses=problem_responses(400, 401, 403, 413, 503),
    summary="Make an API key; the answer carries the key itself, this once",
)
async def create_key(
    body: KeyIn, request: Request, response: Response, database: DatabaseDep, clock: ClockDep
) -> NewKeyOut:
    caller(request, "create_key")
    made = await key_service.create_key(
        database,
        role=body.role,
        now=clock(),
        name=body.name,
        customer_id=body.customer_id,
        organizer_id=body.organizer_id,
        expires_at=body.expires_at,
    )
    response.headers["Location"] = f"/keys/{made.key.id}"
    response.headers["Cache-Control"] = "no-store"  # the answer holds a secret
    return NewKeyOut.made(made)


@router.get(
    "/keys",
    response_model=list[KeyOut],
    responses=problem_responses(401, 403, 503),
    summary="Every API key, oldest first, revoked ones included; never a secret",
)
async def list_keys(request: Request, database: DatabaseDep) -> list[KeyOut]:
    caller(request, "list_keys")
    return [KeyOut.of(key) for key in await key_service.list_keys(database)]


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    responses=problem_responses(401, 403, 404, 503),
    summary="Revoke an API key: refused by this process at once, by every other within "
    "KEY_CACHE_SECONDS",
)
async def revoke_key(
    key_id: str, request: Request, database: DatabaseDep, clock: ClockDep
) -> Response:
    caller(request, "revoke_key")
    await key_service.revoke_key(database, key_id, clock())
    request.app.state.keys.forget()
    return Response(status_code=204)
