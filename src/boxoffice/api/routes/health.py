"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter

from boxoffice.api.deps import DatabaseDep
from boxoffice.api.problems import problem_responses
from boxoffice.api.schemas import Health, Readiness
from boxoffice.db.errors import DatabaseUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem_responses(503),
    summary="The database answers",
)
async def readyz(database: DatabaseDep) -> Readiness:
    try:
        await database.ping()
    except Exception as error:
        raise DatabaseUnavailable(str(error)) from error
    return Readiness(status="ok", database=database.dialect)
