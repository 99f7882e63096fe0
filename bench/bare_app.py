"""The bare ceiling: FastAPI with one no-op route, and nothing of ours.

No middleware (no body limit), no exception handlers, no settings, no
database, the stock JSON response: what FastAPI and uvicorn cost on their
own for a POST with a small JSON body answered 201 with a small JSON body.
Every layer Boxoffice adds on top (our middleware, our models, request ids,
later auth and rate limits) is measured against this as well as against our
own no-op route (`bench/noop_app.py`).

Benchmark-only: never mounted in the product.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

NO_ID = "00000000-0000-4000-8000-000000000000"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eventId: str  # noqa: N815 - the wire's names, with no alias machinery
    sectionId: str  # noqa: N815
    qty: int


def create_bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/noop", status_code=201)
    async def noop(body: Body) -> dict[str, Any]:
        return {
            "id": NO_ID,
            "eventId": body.eventId,
            "sectionId": body.sectionId,
            "qty": body.qty,
            "unitPrice": 5,
            "totalPrice": 5 * body.qty,
            "status": "confirmed",
            "createdAt": datetime.now(UTC).isoformat(),
        }

    @app.get("/readyz")  # after /noop: for the benchmark to know the server is up
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    return app
