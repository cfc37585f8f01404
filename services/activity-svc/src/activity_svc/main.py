"""App factory of activity-svc: ``uvicorn activity_svc.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

import activity_svc
from activity_svc.events import CONSUMERS, STREAM
from activity_svc.settings import Settings
from ght_shared.app import ServiceParts, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="activity-svc",
            description=activity_svc.__doc__ or "",
            owned_streams=(STREAM,),
            consumers=CONSUMERS,
        ),
    )
