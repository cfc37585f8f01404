"""``GET /api/territory/overview``: the portal's home page in one call.

The gateway asks the four services for their part in parallel, each at
``GET /overview`` (the contract every service implements, ``docs/overview.md``),
forwarding the caller's token so that each service applies its own rights, and
merges the answers per establishment. A part that cannot be had never fails
the whole: it is marked ``unavailable`` (service down, timeout, breaker open,
error) or ``not_available_yet`` (the service has no ``/overview`` yet: it
answers 404), and the other parts are returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from ght_gateway.security import AUTHENTICATED_RESPONSES, require
from ght_gateway.settings import Settings
from ght_gateway.upstream import UpstreamBadResponse, UpstreamError, Upstreams, upstreams_of
from ght_shared.auth import SERVICES, Principal

router = APIRouter(tags=["territory"])

OVERVIEW_PATH = "/overview"


class PartStatus(StrEnum):
    OK = "ok"
    UNAVAILABLE = "unavailable"
    NOT_AVAILABLE_YET = "not_available_yet"


class Part(BaseModel):
    status: PartStatus
    detail: str | None = None


class EstablishmentOverview(BaseModel):
    finess: str
    parts: dict[str, Any] = Field(
        description="Per service (beds, staffing, activity, contracts): its figures, "
        "or null when that part is not available."
    )


class TerritoryOverview(BaseModel):
    generated_at: datetime
    parts: dict[str, Part] = Field(description="Whether each service's part could be had.")
    establishments: list[EstablishmentOverview]
    territory: dict[str, Any] = Field(description="Territorial aggregates, per service.")


async def _part(
    upstreams: Upstreams, service: str, target: str, headers: Mapping[str, str], timeout_s: float
) -> tuple[Part, dict[str, Any]]:
    """One service's part: its status, and its document when it answered."""
    try:
        document = await upstreams.get_json(service, target, headers=headers, timeout_s=timeout_s)
    except UpstreamBadResponse as exc:
        if exc.upstream_status == 404:
            return Part(
                status=PartStatus.NOT_AVAILABLE_YET,
                detail=f"The {service} service does not publish its overview yet.",
            ), {}
        return Part(status=PartStatus.UNAVAILABLE, detail=exc.detail), {}
    except UpstreamError as exc:
        return Part(status=PartStatus.UNAVAILABLE, detail=exc.detail), {}
    if not isinstance(document, dict):
        return Part(
            status=PartStatus.UNAVAILABLE, detail=f"The {service} overview is not an object."
        ), {}
    return Part(status=PartStatus.OK), document


def merge(
    principal: Principal, answers: Mapping[str, tuple[Part, dict[str, Any]]]
) -> TerritoryOverview:
    """Merge the services' documents per establishment, keeping only what the caller may see."""
    by_finess: dict[str, dict[str, Any]] = {}
    territory: dict[str, Any] = {}
    for service, (part, document) in answers.items():
        if part.status is not PartStatus.OK:
            continue
        establishments = document.get("establishments") or {}
        for finess, figures in establishments.items() if isinstance(establishments, dict) else ():
            if principal.may_act_for(finess):
                by_finess.setdefault(finess, {})[service] = figures
        if "territory" in document:
            territory[service] = document["territory"]
    if not principal.is_territorial:
        for finess in principal.establishments:
            by_finess.setdefault(finess, {})
    return TerritoryOverview(
        generated_at=datetime.now(UTC),
        parts={service: part for service, (part, _) in answers.items()},
        establishments=[
            EstablishmentOverview(
                finess=finess,
                parts={service: figures.get(service) for service in answers},
            )
            for finess, figures in sorted(by_finess.items())
        ],
        territory=territory,
    )


@router.get(
    "/api/territory/overview",
    summary="Beds, staffing gaps, activity and contract objectives per establishment",
    response_model=TerritoryOverview,
    responses=AUTHENTICATED_RESPONSES,
)
async def overview(
    request: Request, principal: Annotated[Principal, Depends(require("territory:read"))]
) -> TerritoryOverview:
    settings: Settings = request.app.state.settings
    upstreams = upstreams_of(request)
    # An establishment's people ask only for their own; the services check it again.
    query = (
        ""
        if principal.is_territorial
        else urlencode([("establishment", finess) for finess in principal.establishments])
    )
    target = f"{OVERVIEW_PATH}?{query}" if query else OVERVIEW_PATH
    headers = {"authorization": request.headers["authorization"]}
    results = await asyncio.gather(
        *(
            _part(upstreams, service, target, headers, settings.overview_timeout_s)
            for service in SERVICES
        )
    )
    return merge(principal, dict(zip(SERVICES, results, strict=True)))
