"""An unknown query parameter is a 422 naming it, on every route of a service."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Query, Request
from pydantic_settings import SettingsConfigDict

from ght_shared.app import ServiceParts, create_service_app
from ght_shared.pagination import Cursor, Limit
from ght_shared.queries import forwards_query
from ght_shared.settings import ServiceSettings
from ght_shared.testing.plugin import running_app


class _Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TESTSVC_")
    service_name: str = "test-svc"


def _establishment(establishment: Annotated[str | None, Query()] = None) -> str | None:
    return establishment


router = APIRouter()


@router.get("/beds")
async def list_beds(
    unit: str | None = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    establishment: Annotated[str | None, Depends(_establishment)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, str | None]:
    return {"unit": unit, "from": from_, "establishment": establishment}


@router.get("/passed/{path:path}")
@forwards_query
async def passed_on(request: Request, path: str) -> dict[str, str]:
    return dict(request.query_params)


async def _client(make_settings) -> httpx.AsyncClient:
    settings = await make_settings(_Settings)
    return create_service_app(settings, ServiceParts(title="t", routers=[router]))


async def test_an_unknown_parameter_is_a_422_naming_it_and_what_the_route_accepts(make_settings):
    async with running_app(await _client(make_settings)) as client:
        response = await client.get("/beds", params={"unit": "1102", "coded": "false"})

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "coded",
            "in": "query",
            "rule": "unknown_parameter",
            "message": "is not a parameter of this route"
            " (it accepts: cursor, establishment, from, limit, unit)",
        }
    ]


async def test_parameters_of_dependencies_aliases_and_repeats_are_known(make_settings):
    async with running_app(await _client(make_settings)) as client:
        response = await client.get(
            "/beds?unit=1102&unit=1103&from=2026-01&establishment=420784878&limit=5"
        )
        health = await client.get("/health/live", params={"verbose": "1"})
        passed = await client.get("/passed/x", params={"anything": "1"})

    assert response.status_code == 200, response.text
    assert response.json() == {"unit": "1103", "from": "2026-01", "establishment": "420784878"}
    assert health.status_code == 422
    assert passed.json() == {"anything": "1"}


async def test_every_unknown_parameter_is_named_once(make_settings):
    async with running_app(await _client(make_settings)) as client:
        response = await client.get("/beds?Unit=1&unit_code=2&Unit=3")

    assert [e["field"] for e in response.json()["errors"]] == ["Unit", "unit_code"]
