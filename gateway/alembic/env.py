"""Alembic environment of gateway: only its own tables, plus the shared infra tables."""

from ght_gateway.models import Base
from ght_gateway.settings import Settings
from ght_shared.migrations import run_env

run_env(Base.metadata, lambda: Settings().database_url)
