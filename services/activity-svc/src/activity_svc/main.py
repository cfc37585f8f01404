"""App factory of activity-svc: ``uvicorn activity_svc.main:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

from ght_shared.app import ServiceParts, create_service_app
from activity_svc.events import CONSUMERS, STREAM
from activity_svc.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        ServiceParts(
            title="activity-svc",
            description="Activity service of the territorial platform: the territory referential (org-unit tree), activity records, indicators with year-over-year comparison, targets and alerts.",
            owned_streams=(STREAM,),
            consumers=CONSUMERS,
        ),
    )
