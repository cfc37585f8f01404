"""Settings of the gateway, read from ``GATEWAY_*`` environment variables."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_settings import SettingsConfigDict

from ght_shared.settings import ServiceSettings


class Upstreams(BaseModel):
    """Base URLs of the services (``GATEWAY_UPSTREAMS__BEDS=http://...``)."""

    contracts: str = "http://127.0.0.1:8001"
    activity: str = "http://127.0.0.1:8002"
    beds: str = "http://127.0.0.1:8003"
    staffing: str = "http://127.0.0.1:8004"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    service_name: str = "gateway"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/gateway"
    upstreams: Upstreams = Upstreams()
