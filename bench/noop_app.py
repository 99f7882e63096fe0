"""The ceiling: the same web stack (uvicorn, FastAPI, our middleware, pydantic) with no database.

`POST /noop` parses a booking body exactly like `POST /book` and answers a
201 booking, so the gap between this and `/book` is the cost of booking.
Benchmark-only: it is never mounted in the product.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from fastapi import FastAPI

from boxoffice.api.app import create_app
from boxoffice.api.schemas import BookIn, BookingOut


def create_noop_app() -> FastAPI:
    app = create_app()

    @app.post("/noop", status_code=201, response_model=BookingOut)
    async def noop(body: BookIn) -> BookingOut:
        return BookingOut(
            id=str(uuid.uuid4()),
            event_id=body.event_id,
            section_id=body.section_id,
            qty=body.qty,
            unit_price=Decimal("5.00"),
            total_price=Decimal("5.00") * body.qty,
            status="confirmed",
            created_at=datetime.now(UTC),
        )

    return app
