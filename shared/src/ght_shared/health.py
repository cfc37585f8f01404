"""Liveness and readiness probes: ready means the database answers and NATS is connected."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ght_shared.db import Database
from ght_shared.errors import problem
from ght_shared.messaging import NatsConnection

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="The process can serve: its database answers and NATS is connected",
    responses={503: {"description": "A dependency is down (problem+json, with `checks`)"}},
)
async def ready(request: Request) -> JSONResponse:
    database: Database = request.app.state.database
    nats: NatsConnection = request.app.state.nats
    checks: dict[str, Any] = {}
    try:
        await asyncio.wait_for(database.ping(), READY_TIMEOUT_S)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    checks["nats"] = "ok" if nats.connected else "unavailable"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return problem(
        503,
        "not_ready",
        "Not ready",
        "A dependency of the service is unavailable.",
        headers={"Retry-After": "5"},
        checks=checks,
    )
