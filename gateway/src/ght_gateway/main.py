"""App factory of the gateway: ``uvicorn ght_gateway.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

import ght_gateway
from ght_gateway.settings import Settings
from ght_shared.app import ServiceParts, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="gateway",
            description=ght_gateway.__doc__ or "",
        ),
    )
