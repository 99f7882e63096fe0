"""Public ids are UUID strings; anything that is not one names nothing."""

from __future__ import annotations

import uuid


def parse_id(value: str) -> uuid.UUID | None:
    """The UUID in `value`, or None when `value` cannot be an id we issued."""
    if len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def new_id() -> uuid.UUID:
    return uuid.uuid4()
