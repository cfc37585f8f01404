"""App factory of staffing-svc: ``uvicorn staffing_svc.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

import staffing_svc
from ght_shared.app import ServiceParts, create_service_app
from staffing_svc.consumers import CONSUMERS
from staffing_svc.events import STREAM
from staffing_svc.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="staffing-svc",
            description=staffing_svc.__doc__ or "",
            owned_streams=(STREAM,),
            consumers=CONSUMERS,
        ),
    )
