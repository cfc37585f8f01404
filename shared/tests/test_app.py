"""A service built by create_service_app: request context, outbox, consumers and audit together."""

from __future__ import annotations

import asyncpg
import pytest
from fastapi import APIRouter

from ght_shared.app import ServiceParts, create_service_app
from ght_shared.audit import record_audit
from ght_shared.consumer import ConsumerSpec
from ght_shared.db import SessionDep
from ght_shared.outbox import add_event
from ght_shared.testing.effects import EffectProbe, count_effects
from ght_shared.testing.plugin import running_app, wait_for
from ght_shared.urls import plain_url

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def things_router(probe: EffectProbe) -> APIRouter:
    router = APIRouter()

    @router.post("/things", status_code=201)
    async def create_thing(session: SessionDep) -> dict[str, str]:
        event = await add_event(session, probe.event("thing/1"))
        await record_audit(session, "tester", "thing.created", "thing/1", detail={"n": 1})
        return {"event": str(event.id)}

    return router


@pytest.fixture
async def service(probe_settings):
    # A probe of the test's own: events of other tests on the shared stream are not its concern.
    probe = EffectProbe()
    spec = ConsumerSpec(
        service=probe_settings.service_name, stream="BEDS", handlers={probe.subject: probe.handle}
    )
    parts = ServiceParts(title="t", routers=[things_router(probe)], consumers=[spec])
    async with running_app(create_service_app(probe_settings, parts)) as client:
        yield client, probe_settings


async def _fetch(settings, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def test_the_consumers_run_in_the_lifespan_and_apply_what_the_relay_publishes(service):
    client, settings = service
    assert (await client.post("/things")).status_code == 201

    async def applied() -> bool:
        return (await count_effects(settings.database_url)).rows == 1

    await wait_for(applied)


async def test_the_request_trace_and_id_are_carried_into_the_events_and_the_audit(service):
    client, settings = service
    response = await client.post(
        "/things",
        headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "X-Request-ID": "req-42"},
    )
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    (row,) = await _fetch(settings, "SELECT payload FROM outbox")
    assert f'"traceparent":"00-{TRACE_ID}-'.encode() in row["payload"]
    (audit,) = await _fetch(settings, "SELECT actor, action, request_id FROM audit_log")
    assert (audit["actor"], audit["action"], audit["request_id"]) == (
        "tester",
        "thing.created",
        "req-42",
    )


async def test_the_audit_log_cannot_be_rewritten(service):
    client, settings = service
    assert (await client.post("/things")).status_code == 201
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE audit_log SET actor = 'someone else'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM audit_log")
    finally:
        await conn.close()


async def test_metrics_expose_requests_outbox_and_consumers(service):
    client, settings = service
    await client.post("/things")

    async def consumed() -> bool:
        return (await count_effects(settings.database_url)).rows == 1

    await wait_for(consumed)
    text = (await client.get("/metrics")).text
    assert 'ght_http_requests_total{method="POST",route="/things",status="201"} 1.0' in text
    assert "ght_outbox_published_total 1.0" in text
    assert "ght_consumer_messages_total" in text
    assert "ght_outbox_backlog" in text
