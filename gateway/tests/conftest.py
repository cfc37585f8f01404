"""Fixtures of the gateway's tests: the gateway app on a fresh migrated database, demo mode.

Tokens here are the gateway's own (``POST /auth/token``), signed with the keys it
keeps in its database: nothing is minted by the test key of the plugin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from gateway_testing import ALEMBIC_INI, DEMO_PASSWORD
from routing_servers import ServiceStack, UvicornProcess, echo_process, start_service_stack

from ght_gateway.main import create_app
from ght_gateway.settings import Settings
from ght_shared.testing.apps import app_fixtures
from ght_shared.testing.plugin import PostgresHandle, running_app

GatewayFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
GatewaySettingsFactory = Callable[..., Awaitable[Settings]]


GATEWAY_TEST_SETTINGS: dict[str, Any] = {
    "demo": True,
    "demo_password": DEMO_PASSWORD,
    "jwt_public_key": None,  # the gateway verifies with its own keys
    "metrics_port": 0,  # a free port: gateways of several tests run at once
}

gateway_settings, gateway_app, gateway = app_fixtures(
    "gateway", create_app, Settings, ALEMBIC_INI, **GATEWAY_TEST_SETTINGS
)
"""``gateway`` is an HTTP client bound to a running demo gateway (lifespan entered)."""


@pytest.fixture(scope="session")
def make_gateway_settings(make_settings: Any) -> GatewaySettingsFactory:
    """``await make_gateway_settings(upstreams=...)``: demo gateway settings on a fresh database."""

    async def build(**overrides: Any) -> Settings:
        settings: Settings = await make_settings(
            Settings, ALEMBIC_INI, **{**GATEWAY_TEST_SETTINGS, **overrides}
        )
        return settings

    return build


@pytest.fixture(scope="session")
async def services(
    postgres: PostgresHandle, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceStack]:
    """The four services as uvicorn processes on fresh databases, for the whole session."""
    stack = await start_service_stack(postgres, tmp_path_factory.mktemp("services"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
async def echo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[UvicornProcess]:
    """The test-only upstream (``echo_upstream.py``) as a uvicorn process."""
    process = echo_process(tmp_path_factory.mktemp("echo"))
    await process.start()
    yield process
    process.stop()


@pytest.fixture
def gateway_with(make_gateway_settings: GatewaySettingsFactory) -> GatewayFactory:
    """A gateway with other settings.

    ``async with gateway_with(login_max_failures=2) as client: ...``
    """

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = await make_gateway_settings(**overrides)
        async with running_app(create_app(settings)) as client:
            yield client

    return start
