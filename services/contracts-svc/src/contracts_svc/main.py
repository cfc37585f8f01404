"""App factory of contracts-svc: ``uvicorn contracts_svc.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

import contracts_svc
from contracts_svc.consumers import CONSUMERS
from contracts_svc.events import STREAM
from contracts_svc.settings import Settings
from ght_shared.app import ServiceParts, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="contracts-svc",
            description=contracts_svc.__doc__ or "",
            owned_streams=(STREAM,),
            consumers=CONSUMERS,
        ),
    )
