"""Settings of contracts-svc, read from ``CONTRACTS_*`` environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from ght_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CONTRACTS_")

    service_name: str = "contracts-svc"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/contracts"
