"""Fixtures of activity-svc's tests: the service on a fresh migrated database, real NATS.

``activity`` is an HTTP client bound to the running app (lifespan entered: relay and
consumers run); ``territory`` adds the small territory of ``activity_testing``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from activity_testing import ALEMBIC_INI, CH_NORD, CHU, build_territory
from fastapi import FastAPI

from activity_svc.main import create_app
from activity_svc.settings import Settings
from ght_shared.db import Database
from ght_shared.testing.plugin import running_app


@pytest.fixture
async def activity_settings(make_settings: Any) -> Settings:
    settings: Settings = await make_settings(Settings, ALEMBIC_INI)
    return settings


@pytest.fixture
def activity_app(activity_settings: Settings) -> FastAPI:
    return create_app(activity_settings)


@pytest.fixture
async def activity(activity_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(activity_app) as client:
        yield client


@pytest.fixture
def database(activity_app: FastAPI, activity: httpx.AsyncClient) -> Database:
    """The running app's database (its sessions are the ones the API uses)."""
    db: Database = activity_app.state.database
    return db


@pytest.fixture
async def territory(database: Database) -> None:
    """The small territory of ``activity_testing`` (two establishments, units with UF codes)."""
    async with database.transaction() as session:
        await build_territory(session)


Headers = Callable[..., dict[str, str]]


@pytest.fixture(scope="session")
def auth(make_token: Any) -> Headers:
    """``auth("it_system", CHU)``: the headers of a role's token for an establishment.

    Roles and scopes follow the gateway's role table (docs/roles.md).
    """
    read = "contracts:read activity:read beds:read staffing:read territory:read"
    scopes = {
        "admin": read + " contracts:write activity:write beds:write staffing:write admin",
        "commission": read + " contracts:approve",
        "direction": read + " contracts:write",
        "pole_manager": read + " contracts:write",
        "it_system": read + " activity:write beds:write staffing:write",
        "bed_manager": read + " beds:write",
        "nobody": "",
    }

    def headers(role: str, establishment: str = "*", **claims: Any) -> dict[str, str]:
        token = make_token(
            f"{role}-{establishment}",
            roles=[role],
            establishments=[establishment],
            scope=scopes[role],
            **claims,
        )
        return {"Authorization": f"Bearer {token}"}

    return headers


__all__ = ["CHU", "CH_NORD"]
