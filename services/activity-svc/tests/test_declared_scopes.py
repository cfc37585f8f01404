"""activity-svc declares in its OpenAPI document the scopes each route accepts, which the
gateway reads to check a route's coarse scope (``x-required-scopes``)."""

from __future__ import annotations

from typing import Any

import httpx

STEER = ["activity:write", "contracts:write"]


async def _operations(activity: httpx.AsyncClient) -> dict[tuple[str, str], dict[str, Any]]:
    document = (await activity.get("/openapi.json")).json()
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


async def test_steering_writes_accept_the_contract_writers_scope_too(
    activity: httpx.AsyncClient,
) -> None:
    operations = await _operations(activity)
    for key in [
        ("PUT", "/targets/{indicator}/{org_unit}/{year}"),
        ("DELETE", "/targets/{indicator}/{org_unit}/{year}"),
        ("POST", "/alert-rules"),
        ("DELETE", "/alert-rules/{rule_id}"),
        ("POST", "/alerts/{alert_id}/acknowledge"),
    ]:
        assert operations[key]["x-required-scopes"] == STEER, key


async def test_every_other_route_behind_a_token_declares_its_read_or_write_scope(
    activity: httpx.AsyncClient,
) -> None:
    for (method, path), operation in (await _operations(activity)).items():
        if path.startswith(("/health/", "/metrics")):
            assert "x-required-scopes" not in operation, path
            continue
        scopes = operation["x-required-scopes"]
        if scopes == STEER:
            continue
        expected = "activity:read" if method == "GET" else "activity:write"
        assert scopes == [expected], (method, path)
