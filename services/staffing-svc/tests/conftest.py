"""Fixtures of staffing-svc's tests: the service on a fresh migrated database, real NATS.

``staffing`` is an HTTP client bound to the running app (lifespan entered: relay and
consumers run); ``auth(role, establishment)`` (``ght_shared.testing``) gives the headers
of a role's token.
"""

from __future__ import annotations

from pathlib import Path

from ght_shared.testing.apps import app_fixtures
from staffing_svc.main import create_app
from staffing_svc.settings import Settings

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"

staffing_settings, staffing_app, staffing = app_fixtures(
    "staffing", create_app, Settings, ALEMBIC_INI
)
