"""Alembic environment of gateway: only its own tables, plus the shared infra tables."""

from ght_shared.migrations import run_env
from ght_gateway.models import Base
from ght_gateway.settings import Settings

run_env(Base.metadata, lambda: Settings().database_url)
