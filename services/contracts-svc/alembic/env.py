"""Alembic environment of contracts: only its own tables, plus the shared infra tables."""

from ght_shared.migrations import run_env
from contracts_svc.models import Base
from contracts_svc.settings import Settings

run_env(Base.metadata, lambda: Settings().database_url)
