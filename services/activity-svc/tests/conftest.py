"""Fixtures of activity-svc's tests: the service on a fresh migrated database, real NATS.

``activity`` is an HTTP client bound to the running app (lifespan entered: relay and
consumers run); ``territory`` adds the small territory of ``activity_testing``; ``auth``
(``ght_shared.testing``) gives the headers of a demo role's token.
"""

from __future__ import annotations

import httpx
import pytest
from activity_testing import ALEMBIC_INI, CH_NORD, CHU, build_territory
from fastapi import FastAPI

from activity_svc.main import create_app
from activity_svc.settings import Settings
from ght_shared.db import Database
from ght_shared.testing.apps import app_fixtures

activity_settings, activity_app, activity = app_fixtures(
    "activity", create_app, Settings, ALEMBIC_INI
)


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


__all__ = ["CHU", "CH_NORD"]
