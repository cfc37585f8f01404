"""The authorisation matrix: each role against a sample of routes, as docs/roles.md says.

Every service is the echo upstream here, so a request let through answers 200 and a
refused one is the gateway's own 401 or 403.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_testing import bearer, client_token, password_token
from routing_servers import GatewayServer, UvicornProcess

from ght_gateway.settings import Upstreams
from ght_shared.auth import SERVICES

pytestmark = pytest.mark.xdist_group("gateway-routing")

# Who is let through (2xx), per route; everyone else with a valid token gets 403.
ALL = {"admin", "commission", "direction", "pole_manager", "bed_manager", "staffing", "system"}
MATRIX: list[tuple[str, str, set[str]]] = [
    ("GET", "/auth/me", ALL),
    ("GET", "/api/territory/overview", ALL),
    ("GET", "/api/beds/beds", ALL),
    ("GET", "/api/contracts/contracts", ALL),
    ("GET", "/admin/users", {"admin"}),
    ("GET", "/admin/audit", {"admin"}),
    ("POST", "/api/beds/transfers", {"admin", "bed_manager", "system"}),
    ("POST", "/api/staffing/needs", {"admin", "staffing", "system"}),
    ("POST", "/api/activity/imports", {"admin", "system"}),
    ("PUT", "/api/contracts/contracts/c1", {"admin", "direction", "pole_manager"}),
    ("DELETE", "/api/beds/reservations/r1", {"admin", "bed_manager", "system"}),
]

PRINCIPALS = {
    "admin": "admin",
    "commission": "commission",
    "direction": "direction.chu",
    "pole_manager": "cadre.chu",
    "bed_manager": "lits.chu",
    "staffing": "effectifs.g4",
    "system": "si-chu",
}


@pytest.fixture(scope="module")
async def client(
    echo: UvicornProcess, make_gateway_settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = await make_gateway_settings(
        upstreams=Upstreams(**{service: echo.url for service in SERVICES})
    )
    async with GatewayServer(settings) as server, server.client() as client:
        yield client


@pytest.fixture(scope="module")
async def tokens(client: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    tokens = {}
    for role, who in PRINCIPALS.items():
        issued = await (
            client_token(client, who) if who.startswith("si-") else password_token(client, who)
        )
        tokens[role] = bearer(issued)
    return tokens


@pytest.mark.parametrize(("method", "path", "allowed"), MATRIX)
async def test_each_role_reaches_what_the_role_table_grants_and_no_more(
    client: httpx.AsyncClient, tokens: dict[str, dict[str, str]], method, path, allowed
):
    assert (await client.request(method, path)).status_code == 401
    outcomes = {}
    for role, token in tokens.items():
        response = await client.request(method, path, headers=token)
        outcomes[role] = response.status_code
        if response.status_code == 403:
            assert response.json()["code"] == "forbidden"
    assert {role for role, status in outcomes.items() if 200 <= status < 300} == allowed, outcomes
    assert {role for role, status in outcomes.items() if status == 403} == ALL - allowed, outcomes
