"""Schemathesis hooks that let its stateful phase start a checkout where a checkout starts.

Loaded (through `SCHEMATHESIS_HOOKS`) by the stateful run of tests/e2e/test_schemathesis.py
only, so they change nothing in the phases that fuzz every operation.

Two things kept that run from following the OpenAPI links of the checkout:
- schemathesis starts chains only at operations it believes need nothing produced
  earlier; it reads `organizerId` in the body of `POST /events` as a reference to an
  "Organizer" resource that no operation returns, so it never started one at
  create-event, the only operation whose answer the checkout links start from;
- an event the schema allows is almost never one the API takes: a price must have at
  most two decimals and a capacity must be a JSON integer (`5.0` is refused), which the
  document cannot say (a `multipleOf: 0.01` fails on binary floats such as 0.29);
- schemathesis merges a link's `requestBody` into a generated one, so "hold a seat in
  its first section" also held random sections of other items, and was refused whole.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import schemathesis
from schemathesis.specs.openapi import stateful

CREATE_EVENT = "POST /events"

_classify_roots = stateful.classify_root_transitions


def _create_event_starts_chains(*args: Any, **kwargs: Any) -> Any:
    # Only there: chains started at book, hold, confirm or cancel send made-up ids, and
    # spent most of the run's steps on 404s the other phases already provoke.
    roots = _classify_roots(*args, **kwargs)
    roots.fallback.clear()
    roots.reliable.clear()
    roots.reliable.add(CREATE_EVENT)
    return roots


# Private to schemathesis: if a release renames it, loading these hooks fails the test
# (an AttributeError above) instead of the stateful phase quietly chaining nothing.
stateful.classify_root_transitions = _create_event_starts_chains


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    """The document's own links send the body they declare, not one merged into a random one."""
    for path in raw_schema.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                for link in response.get("links", {}).values():
                    if "requestBody" in link:
                        link["x-schemathesis"] = {"merge_body": False}


@schemathesis.hook("map_body").apply_to(method="POST", path="/events")
def an_event_the_api_takes(context: Any, body: Any) -> Any:
    """The generated event, with prices in cents and whole-number counts sent as integers."""
    if not isinstance(body, dict):
        return body
    for section in body.get("sections") or []:
        if isinstance(section, dict):
            section["price"] = _in_cents(section.get("price"))
            section["capacity"] = _integer(section.get("capacity"))
    if "maxPerCustomer" in body:
        body["maxPerCustomer"] = _integer(body["maxPerCustomer"])
    return body


def _in_cents(price: object) -> object:
    if isinstance(price, int | float) and not isinstance(price, bool):
        return float(round(Decimal(str(price)), 2))
    if isinstance(price, str):
        # Any string the schema allows, turned into a price the API takes.
        return f"{sum(map(ord, price)) % 100_000 / 100:.2f}"
    return price


def _integer(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value
