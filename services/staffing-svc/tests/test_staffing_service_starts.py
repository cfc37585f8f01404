"""staffing-svc starts on its own database and NATS, and documents its API."""

from __future__ import annotations

import httpx

from ght_shared.testing import Headers
from ght_shared.testing.plugin import wait_for


async def test_it_is_ready_once_its_database_and_nats_answer(staffing: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        return (await staffing.get("/health/ready")).status_code == 200

    await wait_for(ready)  # NATS connects in the background
    assert (await staffing.get("/health/ready")).json()["status"] == "ready"


async def test_its_openapi_document_names_it(staffing: httpx.AsyncClient) -> None:
    document = (await staffing.get("/openapi.json")).json()
    assert document["info"]["title"] == "staffing-svc"
    assert "/health/ready" in document["paths"]


async def test_a_route_it_does_not_have_is_a_problem_not_a_crash(
    staffing: httpx.AsyncClient, auth: Headers
) -> None:
    response = await staffing.get("/nothing-here", headers=auth("admin"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
