"""Every deployable (four services and the gateway) starts on its own migrated database."""

from __future__ import annotations

import importlib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from ght_shared.tables import INFRA_TABLES
from ght_shared.testing.plugin import running_app, wait_for

ROOT = Path(__file__).parents[1]
DEPLOYABLES = {
    "contracts_svc": ROOT / "services/contracts-svc",
    "activity_svc": ROOT / "services/activity-svc",
    "beds_svc": ROOT / "services/beds-svc",
    "staffing_svc": ROOT / "services/staffing-svc",
    "ght_gateway": ROOT / "gateway",
}


@pytest.mark.parametrize("package", DEPLOYABLES)
async def test_each_deployable_migrates_starts_and_reports_ready(package, make_settings):
    settings_cls = importlib.import_module(f"{package}.settings").Settings
    create_app = importlib.import_module(f"{package}.main").create_app
    # A free metrics port for the gateway (the others serve /metrics on their own port).
    extra = {"metrics_port": 0} if package == "ght_gateway" else {}
    settings = await make_settings(settings_cls, DEPLOYABLES[package] / "alembic.ini", **extra)

    engine = create_async_engine(settings.database_url)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert tables >= INFRA_TABLES

    app = create_app(settings)
    async with running_app(app) as client:
        assert (await client.get("/health/live")).json() == {"status": "ok"}

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await wait_for(ready)
        body = (await client.get("/health/ready")).json()
        assert body["checks"] == {"database": "ok", "nats": "ok"}
        if package == "ght_gateway":  # the public door: metrics on a port of their own
            assert (await client.get("/metrics")).status_code == 404
            async with httpx.AsyncClient(trust_env=False) as scraper:
                url = f"http://127.0.0.1:{app.state.metrics_port}/metrics"
                metrics = await scraper.get(url)
        else:
            metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert 'ght_http_requests_total{method="GET",route="/health/ready",status="200"}' in (
            metrics.text
        )
