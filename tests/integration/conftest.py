"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from boxoffice.booking import BatchedBooker
from boxoffice.db.database import Database
from tests.support.statement_log import traced

__all__ = ["traced"]  # a fixture of every integration test: what the database ran


@pytest.fixture
async def booker(database: Database) -> AsyncIterator[BatchedBooker]:
    """A started group-commit booker on the test's database, stopped afterwards."""
    path = BatchedBooker(database, max_tickets_per_booking=10)
    await path.start()
    yield path
    await path.stop()
