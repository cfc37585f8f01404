"""Alert rules and alerts: the use cases of creating and stopping a rule, acknowledging an
alert. How rules are evaluated on figures is :mod:`activity_svc.steering.evaluation`.

Each use case checks the rights (a steering write: :func:`~activity_svc.access.
ensure_may_steer`), writes, records the audit and flushes; a new rule is evaluated at
once on the figures already there (:func:`activity_svc.reactions.rule_created`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc import reactions
from activity_svc.access import ensure_may_steer
from activity_svc.errors import AlertClosed, AlertNotFound, AlertRuleNotFound
from activity_svc.lookups import indicator_of, org_unit_of
from activity_svc.models import (
    Alert,
    AlertBasis,
    AlertChangeKind,
    AlertDirection,
    AlertRule,
    AlertStatus,
)
from activity_svc.steering.evaluation import close_alert, closed_event, record_change
from ght_shared.audit import record_audit
from ght_shared.auth import Principal
from ght_shared.outbox import add_events


@dataclass(frozen=True)
class RuleSpec:
    """What an alert rule watches, against what, from which threshold on."""

    indicator: str
    org_unit: str
    basis: AlertBasis
    threshold: float
    """In points for a rate (its indicator in %), in % of the reference otherwise."""
    direction: AlertDirection


async def create_rule(session: AsyncSession, actor: Principal, spec: RuleSpec) -> AlertRule:
    """Create an active rule (404 for an unknown indicator or org unit), audit it, and
    evaluate it on the figures already there."""
    indicator_of(spec.indicator)
    unit = await org_unit_of(session, spec.org_unit)
    await ensure_may_steer(session, actor, unit)
    rule = AlertRule(
        id=uuid.uuid4(),
        indicator=spec.indicator,
        org_unit=spec.org_unit,
        basis=spec.basis,
        threshold=spec.threshold,
        direction=spec.direction,
        active=True,
        created_at=datetime.now(UTC),
        created_by=actor.sub,
    )
    session.add(rule)
    await session.flush()
    await record_audit(
        session,
        actor,
        "alert_rule.created",
        f"alert_rule/{rule.id}",
        establishment=unit.finess,
        detail={
            "indicator": rule.indicator,
            "org_unit": rule.org_unit,
            "basis": rule.basis,
            "threshold": rule.threshold,
            "direction": rule.direction,
        },
    )
    await reactions.rule_created(session, rule)
    return rule


async def stop_rule(session: AsyncSession, actor: Principal, rule_id: uuid.UUID) -> AlertRule:
    """Stop an active rule (404 ``alert_rule_not_found`` otherwise); its alerts still open
    close (reason ``rule_deleted``, with ``alert.closed``) and stay readable."""
    rule = await session.get(AlertRule, rule_id, with_for_update=True)
    if rule is None or not rule.active:
        raise AlertRuleNotFound(f"No alert rule {rule_id}.", rule=str(rule_id))
    unit = await org_unit_of(session, rule.org_unit)
    await ensure_may_steer(session, actor, unit)
    rule.active = False
    now = datetime.now(UTC)
    still_open = await session.scalars(
        select(Alert)
        .where(Alert.rule_id == rule.id, Alert.status != AlertStatus.CLOSED)
        .with_for_update()
    )
    events = []
    for alert in still_open:
        close_alert(session, alert, now, "rule_deleted", by=actor.sub)
        events.append(closed_event(alert, "rule_deleted"))
    await session.flush()
    await add_events(session, events)
    await record_audit(
        session, actor, "alert_rule.deleted", f"alert_rule/{rule.id}", establishment=unit.finess
    )
    return rule


async def acknowledge_alert(session: AsyncSession, actor: Principal, alert_id: uuid.UUID) -> Alert:
    """Mark an open alert as seen (again: no change); a closed one is over (409)."""
    alert = await session.get(Alert, alert_id, with_for_update=True)
    if alert is None:
        raise AlertNotFound(f"No alert {alert_id}.", alert=str(alert_id))
    await ensure_may_steer(session, actor, await org_unit_of(session, alert.org_unit))
    if alert.status is AlertStatus.CLOSED:
        raise AlertClosed("This alert has closed: there is nothing to acknowledge.")
    if alert.status is AlertStatus.ACKNOWLEDGED:
        return alert
    now = datetime.now(UTC)
    alert.status = AlertStatus.ACKNOWLEDGED
    alert.updated_at = now
    alert.detail = {
        **alert.detail,
        "acknowledged_at": now.isoformat(),
        "acknowledged_by": actor.sub,
    }
    record_change(session, alert, AlertChangeKind.ACKNOWLEDGED, now, by=actor.sub)
    await session.flush()
    await record_audit(
        session, actor, "alert.acknowledged", f"alert/{alert.id}", establishment=alert.finess
    )
    return alert
