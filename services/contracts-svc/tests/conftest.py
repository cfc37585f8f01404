"""Fixtures of contracts-svc's tests: the service on a fresh migrated database, real NATS.

``contracts`` is an HTTP client bound to the running app (lifespan entered: relay and
consumers run); ``auth(role, establishment)`` (``ght_shared.testing``) gives the headers
of a role's token.
"""

from __future__ import annotations

from pathlib import Path

from contracts_svc.main import create_app
from contracts_svc.settings import Settings
from ght_shared.testing.apps import app_fixtures

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"

contracts_settings, contracts_app, contracts = app_fixtures(
    "contracts", create_app, Settings, ALEMBIC_INI
)
