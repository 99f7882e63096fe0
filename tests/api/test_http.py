"""The HTTP edge itself: framework errors, probes and the OpenAPI document."""

from __future__ import annotations

import httpx

from tests.api.conftest import assert_problem


async def test_unknown_route_is_problem_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404, "not_found")


async def test_wrong_method_is_problem_405_with_every_allowed_method(
    client: httpx.AsyncClient,
) -> None:
    response = await client.delete("/events")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"
    response = await client.put("/book")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"


async def test_openapi_declares_problem_bodies_and_no_validation_422(
    client: httpx.AsyncClient,
) -> None:
    """Validation errors are 400s: FastAPI's own 422 is gone. The only 422 is a reused
    idempotency key, declared as problem+json."""
    schema = (await client.get("/openapi.json")).json()
    book = schema["paths"]["/book"]["post"]
    assert set(book["responses"]) == {
        "201",
        "400",
        "401",
        "403",
        "404",
        "409",
        "413",
        "422",
        "429",
        "500",
        "503",
    }
    assert "application/problem+json" in book["responses"]["401"]["content"]
    assert "application/problem+json" in book["responses"]["429"]["content"]
    assert "429" not in schema["paths"]["/healthz"]["get"]["responses"]  # never limited
    assert book["security"] == [{"bearerAuth": []}]
    assert schema["paths"]["/events"]["get"]["security"] == [{}, {"bearerAuth": []}]
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "application/problem+json" in book["responses"]["400"]["content"]
    assert "Retry-After" in book["responses"]["409"]["headers"]
    assert schema["components"]["schemas"]["BookIn"]["properties"]["qty"]["maximum"] == 10
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path in schema["paths"].values():
        for operation in path.values():
            if "422" in operation["responses"]:
                assert "idempotency_key_reused" in operation["responses"]["422"]["description"]
                assert "application/problem+json" in operation["responses"]["422"]["content"]
    assert (await client.get("/docs")).status_code == 200


async def test_a_body_without_json_content_type_says_so(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/book",
        content=b'{"eventId": "a", "sectionId": "b", "qty": 1}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    problem = assert_problem(response, 400, "validation_error")
    assert "Content-Type: application/json" in problem["detail"]
