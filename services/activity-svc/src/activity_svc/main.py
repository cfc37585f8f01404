"""App factory of activity-svc: ``uvicorn activity_svc.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

import activity_svc
from activity_svc.consumers import CONSUMERS
from activity_svc.events import STREAM
from activity_svc.settings import Settings
from ght_shared.app import ServiceParts, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="activity-svc",
            description=activity_svc.__doc__ or "",
            routers=(),
            owned_streams=(STREAM,),
            upload_paths=("/imports",),
            consumers=CONSUMERS,
        ),
    )
