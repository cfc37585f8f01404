"""Alembic environment of staffing: only its own tables, plus the shared infra tables."""

from ght_shared.migrations import run_env
from staffing_svc.models import Base
from staffing_svc.settings import Settings

run_env(Base.metadata, lambda: Settings().database_url)
