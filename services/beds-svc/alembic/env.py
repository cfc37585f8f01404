"""Alembic environment of beds: only its own tables, plus the shared infra tables."""

from beds_svc.models import Base
from beds_svc.settings import Settings
from ght_shared.migrations import run_env

run_env(Base.metadata, lambda: Settings().database_url)
