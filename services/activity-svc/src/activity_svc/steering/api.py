"""Routes of targets, alert rules and alerts: each write parses, calls one use case of
:mod:`~activity_svc.steering.targets` or :mod:`~activity_svc.steering.alerts` (rights,
rules, audit, events, republished figures), and answers.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.access import AUTH_RESPONSES, Reader, Steerer, ensure_may_read, may_read
from activity_svc.errors import AlertNotFound, TargetNotFound
from activity_svc.lookups import indicator_of, org_unit_of, subtree
from activity_svc.models import (
    Alert,
    AlertChange,
    AlertRule,
    AlertStatus,
    OrgUnit,
    Target,
    TargetSource,
)
from activity_svc.steering import alerts, targets
from activity_svc.steering.alerts import RuleSpec
from activity_svc.steering.schemas import (
    AlertChangeRead,
    AlertRead,
    AlertRuleCreate,
    AlertRuleRead,
    TargetPut,
    TargetRead,
)
from activity_svc.steering.targets import TargetChange
from ght_shared.auth import readable_by
from ght_shared.db import SessionDep
from ght_shared.pagination import Cursor, Limit, Page, decode_cursor
from ght_shared.schemas import MAX_KEY, Moment, PathKey, Printable

_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "Unknown indicator or org unit (`indicator_not_found`,"
        " `org_unit_not_found`)."
    }
}

router = APIRouter(responses=AUTH_RESPONSES)

Year = Annotated[int, Query(ge=targets.FIRST_YEAR, le=targets.LAST_YEAR)]
PathYear = Annotated[int, Path(ge=targets.FIRST_YEAR, le=targets.LAST_YEAR)]


# --- targets -------------------------------------------------------------------------


@router.get(
    "/targets",
    tags=["targets"],
    summary="List targets",
    response_model=Page[TargetRead],
    responses=_UNKNOWN,
)
async def list_targets(
    principal: Reader,
    session: SessionDep,
    indicator: Annotated[Printable | None, Query(max_length=MAX_KEY)] = None,
    org_unit: Annotated[Printable | None, Query(max_length=MAX_KEY)] = None,
    year: Year | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[TargetRead]:
    query = select(Target).join(OrgUnit, OrgUnit.code == Target.org_unit)
    if indicator is not None:
        indicator_of(indicator)
        query = query.where(Target.indicator == indicator)
    if org_unit is not None:
        unit = await org_unit_of(session, org_unit)
        ensure_may_read(principal, unit.finess)
        query = query.where(Target.org_unit == org_unit)
    else:
        query = query.where(readable_by(principal, OrgUnit.finess))
    if year is not None:
        query = query.where(Target.year == year)
    order = (Target.org_unit, Target.indicator, Target.year)
    if cursor is not None:
        query = query.where(tuple_(*order) > tuple_(*decode_cursor(cursor, str, str, int)))
    rows = (await session.scalars(query.order_by(*order).limit(limit + 1))).all()
    return Page.of(
        rows,
        limit,
        key=lambda t: (t.org_unit, t.indicator, t.year),
        read=TargetRead.model_validate,
    )


async def _target_scope(session: SessionDep, indicator: str, org_unit: str) -> OrgUnit:
    indicator_of(indicator)
    return await org_unit_of(session, org_unit)


@router.get(
    "/targets/{indicator}/{org_unit}/{year}",
    tags=["targets"],
    summary="One target",
    response_model=TargetRead,
    responses={
        404: {"description": "Unknown indicator or org unit, or no target (`target_not_found`)."}
    },
)
async def get_target(
    indicator: PathKey, org_unit: PathKey, year: PathYear, principal: Reader, session: SessionDep
) -> Target:
    unit = await _target_scope(session, indicator, org_unit)
    ensure_may_read(principal, unit.finess)
    target: Target | None = await session.get(Target, (indicator, org_unit, year))
    if target is None:
        raise TargetNotFound(
            f"No target of {indicator} for {org_unit} in {year}.",
            indicator=indicator,
            org_unit=org_unit,
            year=year,
        )
    return target


@router.put(
    "/targets/{indicator}/{org_unit}/{year}",
    tags=["targets"],
    summary="Set a target (201 created, 200 replaced)",
    response_model=TargetRead,
    responses={
        201: {"description": "Created.", "model": TargetRead},
        **_UNKNOWN,
        422: {"description": "A rule of targets is broken (`invalid_input`)."},
    },
)
async def put_target(
    indicator: PathKey,
    org_unit: PathKey,
    year: PathYear,
    body: TargetPut,
    principal: Steerer,
    session: SessionDep,
    response: Response,
) -> Target:
    result = await targets.set_target(
        session,
        principal,
        TargetChange(
            indicator=indicator,
            org_unit=org_unit,
            year=year,
            value=body.value,
            monthly_profile=tuple(body.monthly_profile) if body.monthly_profile else None,
            source=TargetSource.MANUAL,
        ),
    )
    if result.created:
        response.status_code = 201
        # Relative (the request's own path): it resolves behind the gateway's prefix too.
        response.headers["Location"] = str(year)
    return result.target


@router.delete(
    "/targets/{indicator}/{org_unit}/{year}",
    tags=["targets"],
    status_code=204,
    summary="Remove a target",
    responses={404: {"description": "Unknown indicator or org unit, or no target."}},
)
async def delete_target(
    indicator: PathKey, org_unit: PathKey, year: PathYear, principal: Steerer, session: SessionDep
) -> Response:
    await targets.remove_target(session, principal, indicator, org_unit, year)
    return Response(status_code=204)


# --- alert rules ---------------------------------------------------------------------


@router.post(
    "/alert-rules",
    tags=["alerts"],
    status_code=201,
    summary="Create an alert rule",
    response_model=AlertRuleRead,
    responses=_UNKNOWN,
)
async def create_alert_rule(
    body: AlertRuleCreate, principal: Steerer, session: SessionDep, response: Response
) -> AlertRule:
    rule = await alerts.create_rule(
        session,
        principal,
        RuleSpec(body.indicator, body.org_unit, body.basis, body.threshold, body.direction),
    )
    response.headers["Location"] = f"alert-rules/{rule.id}"  # relative, as everywhere
    return rule


@router.get(
    "/alert-rules",
    tags=["alerts"],
    summary="List the active alert rules",
    response_model=Page[AlertRuleRead],
    responses=_UNKNOWN,
)
async def list_alert_rules(
    principal: Reader,
    session: SessionDep,
    org_unit: Annotated[Printable | None, Query(max_length=MAX_KEY)] = None,
    indicator: Annotated[Printable | None, Query(max_length=MAX_KEY)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AlertRuleRead]:
    query = (
        select(AlertRule).join(OrgUnit, OrgUnit.code == AlertRule.org_unit).where(AlertRule.active)
    )
    if indicator is not None:
        indicator_of(indicator)
        query = query.where(AlertRule.indicator == indicator)
    if org_unit is not None:
        unit = await org_unit_of(session, org_unit)
        ensure_may_read(principal, unit.finess)
        query = query.where(AlertRule.org_unit == org_unit)
    else:
        query = query.where(readable_by(principal, OrgUnit.finess))
    order = (AlertRule.created_at, AlertRule.id)
    if cursor is not None:
        query = query.where(tuple_(*order) > tuple_(*decode_cursor(cursor, datetime, uuid.UUID)))
    rows = (await session.scalars(query.order_by(*order).limit(limit + 1))).all()
    return Page.of(
        rows, limit, key=lambda r: (r.created_at, r.id), read=AlertRuleRead.model_validate
    )


@router.delete(
    "/alert-rules/{rule_id}",
    tags=["alerts"],
    status_code=204,
    summary="Stop an alert rule (its open alerts close, and stay readable)",
    responses={404: {"description": "No such active rule (`alert_rule_not_found`)."}},
)
async def delete_alert_rule(
    rule_id: uuid.UUID, principal: Steerer, session: SessionDep
) -> Response:
    await alerts.stop_rule(session, principal, rule_id)
    return Response(status_code=204)


# --- alerts --------------------------------------------------------------------------


@router.get(
    "/alerts",
    tags=["alerts"],
    summary="Raised alerts, newest first",
    response_model=Page[AlertRead],
    responses=_UNKNOWN,
)
async def list_alerts(
    principal: Reader,
    session: SessionDep,
    org_unit: Annotated[
        Printable | None,
        Query(max_length=MAX_KEY, description="This org unit and every org unit below it."),
    ] = None,
    indicator: Annotated[Printable | None, Query(max_length=MAX_KEY)] = None,
    status: AlertStatus | None = None,
    since: Annotated[Moment | None, Query(description="Raised at or after.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AlertRead]:
    query = select(Alert)
    if org_unit is not None:
        unit = await org_unit_of(session, org_unit)
        ensure_may_read(principal, unit.finess)
        query = query.where(Alert.org_unit.in_(subtree(org_unit)))
    query = query.where(readable_by(principal, Alert.finess))
    if indicator is not None:
        indicator_of(indicator)
        query = query.where(Alert.indicator == indicator)
    if status is not None:
        query = query.where(Alert.status == status)
    if since is not None:
        query = query.where(Alert.raised_at >= since)
    if cursor is not None:
        after = decode_cursor(cursor, datetime, uuid.UUID)
        query = query.where(tuple_(Alert.raised_at, Alert.id) < tuple_(*after))
    rows = (
        await session.scalars(
            query.order_by(Alert.raised_at.desc(), Alert.id.desc()).limit(limit + 1)
        )
    ).all()
    return Page.of(rows, limit, key=lambda a: (a.raised_at, a.id), read=AlertRead.model_validate)


async def _readable_alert(session: AsyncSession, principal: Reader, alert_id: uuid.UUID) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None or not may_read(principal, alert.finess):
        raise AlertNotFound(f"No alert {alert_id}.", alert=str(alert_id))  # as if none
    return alert


@router.get(
    "/alerts/{alert_id}",
    tags=["alerts"],
    summary="An alert, with the children contributing most",
    response_model=AlertRead,
    responses={404: {"description": "No such alert (`alert_not_found`)."}},
)
async def get_alert(alert_id: uuid.UUID, principal: Reader, session: SessionDep) -> Alert:
    return await _readable_alert(session, principal, alert_id)


@router.get(
    "/alerts/{alert_id}/history",
    tags=["alerts"],
    summary="An alert's history: opened, updated, acknowledged, closed, reopened",
    response_model=Page[AlertChangeRead],
    responses={404: {"description": "No such alert (`alert_not_found`)."}},
)
async def alert_history(
    alert_id: uuid.UUID,
    principal: Reader,
    session: SessionDep,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AlertChangeRead]:
    """Oldest first."""
    await _readable_alert(session, principal, alert_id)
    query = select(AlertChange).where(AlertChange.alert_id == alert_id)
    if cursor is not None:
        (after,) = decode_cursor(cursor, int)
        query = query.where(AlertChange.id > after)
    rows = (await session.scalars(query.order_by(AlertChange.id).limit(limit + 1))).all()
    return Page.of(rows, limit, key=lambda c: (c.id,), read=AlertChangeRead.model_validate)


@router.post(
    "/alerts/{alert_id}/acknowledge",
    tags=["alerts"],
    summary="Acknowledge an alert",
    response_model=AlertRead,
    responses={
        404: {"description": "No such alert (`alert_not_found`)."},
        409: {"description": "The alert has closed (`alert_closed`)."},
    },
)
async def acknowledge_alert(alert_id: uuid.UUID, principal: Steerer, session: SessionDep) -> Alert:
    return await alerts.acknowledge_alert(session, principal, alert_id)
