"""Liveness and readiness probes for load balancers and orchestrators; metrics for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from boxoffice.api.access import caller
from boxoffice.api.deps import DatabaseDep
from boxoffice.api.problems import problem_responses
from boxoffice.api.schemas import Health, Readiness
from boxoffice.db.errors import DatabaseUnavailable
from boxoffice.observability.multiprocess import render

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem_responses(503),
    summary="The database answers and bookings are being committed",
)
async def readyz(request: Request, database: DatabaseDep) -> Readiness:
    try:
        await database.ping()
    except Exception as error:
        raise DatabaseUnavailable(str(error)) from error
    if not request.app.state.booker.ready:  # the group-commit task died; it is restarting
        raise DatabaseUnavailable("the booking committer is not running")
    return Readiness(status="ok", database=database.dialect)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics of every worker process (admin)",
)
async def metrics(request: Request) -> Response:
    caller(request, "metrics")
    # This process's counts are up to the moment; the other workers' at most a second old.
    request.app.state.exporter.flush()
    return Response(render(), media_type=CONTENT_TYPE_LATEST)
