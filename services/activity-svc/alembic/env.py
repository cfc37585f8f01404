"""Alembic environment of activity: only its own tables, plus the shared infra tables."""

from activity_svc.models import Base
from activity_svc.settings import Settings
from ght_shared.migrations import run_env

run_env(Base.metadata, lambda: Settings().database_url)
