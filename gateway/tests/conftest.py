"""Fixtures of the gateway's tests: the gateway app on a fresh migrated database, demo mode.

Tokens here are the gateway's own (``POST /auth/token``), signed with the keys it
keeps in its database: nothing is minted by the test key of the plugin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gateway_testing import ALEMBIC_INI, DEMO_PASSWORD, bearer, client_token, password_token

from ght_gateway.main import create_app
from ght_gateway.settings import Settings
from ght_shared.testing.plugin import running_app

__all__ = ["ALEMBIC_INI", "DEMO_PASSWORD", "bearer", "client_token", "password_token"]

GatewayFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


async def _settings(make_settings: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "demo": True,
        "demo_password": DEMO_PASSWORD,
        "jwt_public_key": None,  # the gateway verifies with its own keys
    }
    values.update(overrides)
    settings: Settings = await make_settings(Settings, ALEMBIC_INI, **values)
    return settings


@pytest.fixture
async def gateway_settings(make_settings: Any) -> Settings:
    return await _settings(make_settings)


@pytest.fixture
def gateway_app(gateway_settings: Settings) -> FastAPI:
    return create_app(gateway_settings)


@pytest.fixture
async def gateway(gateway_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client bound to a running gateway (lifespan entered, no network)."""
    async with running_app(gateway_app) as client:
        yield client


@pytest.fixture
def gateway_with(make_settings: Any) -> GatewayFactory:
    """A gateway with other settings.

    ``async with gateway_with(login_max_failures=2) as client: ...``
    """

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = await _settings(make_settings, **overrides)
        async with running_app(create_app(settings)) as client:
            yield client

    return start
