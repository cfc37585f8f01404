"""``GET /api/territory/overview`` against real service processes, one of them stopped."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_testing import bearer, client_token, password_token
from routing_servers import (
    GatewayServer,
    ServiceStack,
    UvicornProcess,
    dead_url,
)

from ght_gateway.settings import Upstreams
from ght_shared.auth import SERVICES

pytestmark = pytest.mark.xdist_group("gateway-routing")

CHU, NORD = "420784878", "420000010"


def _upstreams(**urls: str) -> dict[str, Any]:
    return {"upstreams": Upstreams(**urls), "overview_timeout_s": 2.0}


async def test_a_service_without_an_overview_says_not_available_yet(
    services: ServiceStack, echo: UvicornProcess, make_gateway_settings: Any
):
    # activity-svc publishes its overview (tested end to end, where the services verify
    # the gateway's tokens); here the services cannot verify this test gateway's keys,
    # so the echo upstream stands in for the one service that has an overview.
    urls = {service: services.url(service) for service in SERVICES}
    settings = await make_gateway_settings(**_upstreams(**{**urls, "activity": echo.url}))
    async with GatewayServer(settings) as server, server.client() as client:
        response = await client.get(
            "/api/territory/overview", headers=bearer(await password_token(client, "commission"))
        )

    assert response.status_code == 200
    overview = response.json()
    assert {s: part["status"] for s, part in overview["parts"].items()} == {
        "contracts": "not_available_yet",
        "activity": "ok",
        "beds": "not_available_yet",
        "staffing": "not_available_yet",
    }


async def test_with_one_service_stopped_the_others_parts_are_still_returned(
    services: ServiceStack, echo: UvicornProcess, make_gateway_settings: Any
):
    settings = await make_gateway_settings(
        **_upstreams(
            contracts=services.url("contracts"),
            activity=dead_url(),  # stopped
            beds=echo.url,  # a service that publishes its overview
            staffing=dead_url(),  # stopped
        )
    )
    async with GatewayServer(settings) as server, server.client() as client:
        commission = bearer(await password_token(client, "commission"))
        response = await client.get("/api/territory/overview", headers=commission)

    assert response.status_code == 200
    overview = response.json()
    statuses = {service: part["status"] for service, part in overview["parts"].items()}
    assert statuses == {
        "contracts": "not_available_yet",
        "activity": "unavailable",
        "beds": "ok",
        "staffing": "unavailable",
    }
    assert "staffing" in overview["parts"]["staffing"]["detail"]
    by_finess = {e["finess"]: e["parts"] for e in overview["establishments"]}
    assert by_finess[NORD]["beds"]["strain_level"] == "crisis"
    assert by_finess[NORD]["staffing"] is None
    assert overview["territory"]["beds"]["with_token"] is True  # the caller's token went along
    assert overview["territory"]["beds"]["asked_for"] == []  # the whole territory


async def test_an_establishment_asks_for_and_sees_only_its_own_part(
    echo: UvicornProcess, make_gateway_settings: Any
):
    settings = await make_gateway_settings(**_upstreams(beds=echo.url))
    async with GatewayServer(settings) as server, server.client() as client:
        system = bearer(await client_token(client, "si-ch-nord"))
        overview = (await client.get("/api/territory/overview", headers=system)).json()

    assert [e["finess"] for e in overview["establishments"]] == [NORD]
    assert overview["territory"]["beds"]["asked_for"] == [NORD]


async def test_the_overview_needs_a_token_with_the_territory_scope(
    echo: UvicornProcess, make_gateway_settings: Any
):
    settings = await make_gateway_settings(**_upstreams(beds=echo.url))
    async with GatewayServer(settings) as server, server.client() as client:
        assert (await client.get("/api/territory/overview")).status_code == 401
        narrow = bearer(await password_token(client, "lits.chu", scope="beds:read"))
        response = await client.get("/api/territory/overview", headers=narrow)

    assert response.status_code == 403
    assert response.json()["required_scope"] == "territory:read"
