"""Alembic environment of contracts: only its own tables, plus the shared infra tables."""

from contracts_svc.models import Base
from contracts_svc.settings import Settings
from ght_shared.migrations import run_env

run_env(Base.metadata, lambda: Settings().database_url)
