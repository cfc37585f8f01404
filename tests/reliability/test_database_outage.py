"""PostgreSQL stopped: readiness turns 503, requests fail fast with 503, all recovers after."""

from __future__ import annotations

import time

from fastapi import APIRouter

from ght_shared.app import ServiceParts, create_service_app
from ght_shared.db import SessionDep
from ght_shared.outbox import add_event
from ght_shared.testing.effects import EffectProbe
from ght_shared.testing.plugin import (
    PostgresHandle,
    create_infra_database,
    running_app,
    wait_for,
)

probe = EffectProbe()
router = APIRouter()


@router.post("/things", status_code=201)
async def create_thing(session: SessionDep) -> dict[str, str]:
    event = await add_event(session, probe.event("thing/1"))
    return {"event": str(event.id)}


async def test_a_database_outage_gives_fast_503s_and_the_service_recovers(
    postgres_server, nats_url, make_reliability_settings
):
    handle = PostgresHandle(postgres_server.url("").rstrip("/").replace("+asyncpg", ""), None)
    url = await handle.create_database("outage")
    await create_infra_database(url)
    settings = (await make_reliability_settings(nats_url)).model_copy(
        update={"database_url": url.replace("postgresql://", "postgresql+asyncpg://")}
    )
    app = create_service_app(settings, ServiceParts(title="outage", routers=[router]))

    async with running_app(app) as client:

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await wait_for(ready)
        assert (await client.post("/things")).status_code == 201

        postgres_server.stop()
        started = time.monotonic()

        async def not_ready() -> bool:
            return (await client.get("/health/ready")).status_code == 503

        await wait_for(not_ready, timeout=5)
        body = (await client.get("/health/ready")).json()
        assert body["checks"]["database"].startswith("unavailable")
        assert body["checks"]["nats"] == "ok"
        assert time.monotonic() - started < 5

        started = time.monotonic()
        failed = await client.post("/things")
        assert time.monotonic() - started < 5, "a request must fail fast, not hang"
        assert failed.status_code == 503
        assert failed.headers["content-type"] == "application/problem+json"
        assert failed.json()["code"] == "database_unavailable"
        assert "Retry-After" in failed.headers

        postgres_server.start()
        await wait_for(ready, timeout=15)
        assert (await client.post("/things")).status_code == 201
