"""Evaluating the alert rules on fresh figures: one alert per rule and org unit, which
follows the months (ADR 0019).

A rule watches one indicator on an org unit and every org unit below it (today's
tree). Its reference is last year (the year-to-date variation, or the month's when
there is no year to date) or the target (the gap of the year to date to the target's
year to date); deviations and thresholds are in points for a rate, in % of the
reference otherwise. Each org unit's alert reads the latest complete month evaluated:

- passing the threshold in the rule's direction opens it (``alert.raised``), with the
  figure, the reference, the gap and the children contributing most to the change;
- a later month still past it updates it (acknowledged stays acknowledged);
- a month back within it (or without a reference any more) closes it
  (``alert.closed``); a later month past it again reopens it.

A partial month is not evaluated, nor a month before the one the alert reads, nor one
before the org unit's last complete month (a correction of an old month changes no
alert). Every change is kept in ``alert_change``.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import INDICATORS_BY_CODE, Indicator
from activity_svc.completeness import last_complete_month
from activity_svc.events import SOURCE
from activity_svc.indicators.explain import MAX_CONTRIBUTIONS, children_contributions
from activity_svc.indicators.figures import Figures
from activity_svc.models import (
    Alert,
    AlertBasis,
    AlertChange,
    AlertChangeKind,
    AlertDirection,
    AlertStatus,
)
from ght_shared.events import Event
from ght_shared.outbox import add_events
from ght_shared.payloads.activity import AlertClosed, AlertRaised

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deviation:
    """How far a figure lies from its reference: in points for a rate, else in %."""

    value: float
    reference: float
    gap: float
    unit: str
    year_to_date: bool
    """False when last year's year to date is unknown and the month is compared."""


def deviation_of(figures: Figures, basis: AlertBasis) -> Deviation | None:
    """The figure's deviation from the rule's reference; None when it cannot be computed."""
    unit = figures.variation_unit
    if basis is AlertBasis.LAST_YEAR:
        if figures.year_to_date_variation is not None:
            if figures.year_to_date is None or figures.year_to_date_last_year is None:
                return None
            return Deviation(
                figures.year_to_date,
                figures.year_to_date_last_year,
                figures.year_to_date_variation,
                unit,
                year_to_date=True,
            )
        if (
            figures.variation is None
            or figures.value is None
            or figures.same_period_last_year is None
        ):
            return None
        return Deviation(
            figures.value,
            figures.same_period_last_year,
            figures.variation,
            unit,
            year_to_date=False,
        )
    reference = figures.target_year_to_date
    if figures.year_to_date is None or reference is None:
        return None
    if unit == "points":
        gap = figures.year_to_date - reference
    elif reference == 0:
        return None
    else:
        gap = (figures.year_to_date - reference) / abs(reference) * 100.0
    return Deviation(figures.year_to_date, reference, gap, unit, year_to_date=True)


def breaches(gap: float, threshold: float, direction: AlertDirection) -> bool:
    """True when the gap passes the threshold (strictly) in ``direction``."""
    if direction is AlertDirection.ABOVE:
        return gap > threshold
    if direction is AlertDirection.BELOW:
        return gap < -threshold
    return abs(gap) > threshold


def _amount(value: float, unit: str) -> str:
    return (
        f"{value:.1f} point" + ("s" if abs(value) >= 2 else "")
        if unit == "points"
        else (f"{value:.1f} %")
    )


def alert_message(
    figures: Figures, deviation: Deviation, basis: AlertBasis, threshold: float
) -> str:
    """E.g. ``CHU-IMG: Full stays year to date 12.4 % below last year (threshold 10 %)``,
    ``CHU-CAR: Coding completeness year to date 6.2 points below target (threshold 5
    points)``."""
    indicator = INDICATORS_BY_CODE.get(figures.indicator)
    name = indicator.name if indicator else figures.indicator
    when = "year to date" if deviation.year_to_date else f"in {figures.period:%Y-%m}"
    side = "above" if deviation.gap > 0 else "below"
    if basis is AlertBasis.TARGET:
        reference = "target"
    elif deviation.year_to_date:
        reference = "last year"
    else:
        reference = "the same month last year"
    unit = deviation.unit
    limit = (
        f"{threshold:g} point" + ("s" if threshold >= 2 else "")
        if unit == "points"
        else (f"{threshold:g} %")
    )
    return (
        f"{figures.org_unit}: {name} {when} {_amount(abs(deviation.gap), unit)} {side}"
        f" {reference} (threshold {limit})"
    )


@dataclass(frozen=True)
class _Rule:
    id: uuid.UUID
    indicator: str
    org_unit: str
    basis: AlertBasis
    threshold: float
    direction: AlertDirection


# The active rules watching each of :org_units (on it or on one of its ancestors in
# today's tree), for the indicators named: one query for a whole batch of figures.
_RULES_WATCHING = text(
    """
    WITH RECURSIVE chain (org_unit, ancestor, depth) AS (
        SELECT code, code, 0 FROM unnest(CAST(:org_units AS text[])) AS code
        UNION ALL
        SELECT chain.org_unit, version.parent, chain.depth + 1
        FROM chain
        JOIN org_unit_version AS version
            ON version.code = chain.ancestor AND version.valid_to IS NULL
        WHERE version.parent IS NOT NULL AND chain.depth < 32
    )
    SELECT chain.org_unit, rule.id, rule.indicator, rule.org_unit AS rule_org_unit,
           rule.basis, rule.threshold, rule.direction
    FROM chain
    JOIN alert_rule AS rule ON rule.org_unit = chain.ancestor
    WHERE rule.active AND rule.indicator = ANY(CAST(:indicators AS text[]))
    """
)


async def _rules_watching(
    session: AsyncSession, org_units: set[str], indicators: set[str]
) -> dict[tuple[str, str], list[_Rule]]:
    """The active rules by (org unit watched, indicator)."""
    rows = await session.execute(
        _RULES_WATCHING, {"org_units": sorted(org_units), "indicators": sorted(indicators)}
    )
    rules: dict[tuple[str, str], list[_Rule]] = defaultdict(list)
    for org_unit, rule_id, indicator, rule_org_unit, basis, threshold, direction in rows:
        rules[org_unit, indicator].append(
            _Rule(
                rule_id,
                indicator,
                rule_org_unit,
                AlertBasis(basis),
                threshold,
                AlertDirection(direction),
            )
        )
    return rules


_LOCK_ALERTS = text(
    """
    SELECT count(pg_advisory_xact_lock(hashtextextended('activity-alert:' || k, 0)))
    FROM (SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k) AS ordered
    """
)


def _latest(figures: Sequence[Figures]) -> list[Figures]:
    """Per org unit and indicator, the latest complete month's figures, when it is not
    before the org unit's last complete month."""
    latest: dict[tuple[str, str], Figures] = {}
    for figure in figures:
        if figure.partial:
            continue
        if figure.complete_up_to is not None and figure.period < last_complete_month(
            figure.complete_up_to
        ):
            continue
        key = (figure.org_unit, figure.indicator)
        if key not in latest or latest[key].period < figure.period:
            latest[key] = figure
    return list(latest.values())


@dataclass(frozen=True)
class _Step:
    """What one rule makes of one org unit's figure."""

    rule: _Rule
    figure: Figures
    deviation: Deviation | None
    breach: bool


async def evaluate_alerts(
    session: AsyncSession,
    figures: Sequence[Figures],
    rules: Collection[uuid.UUID] | None = None,
) -> None:
    """Open, update, close or reopen the alerts the fresh ``figures`` call for.

    Called with the recomputed figures after each change of them (an import, a
    capacity, a target, the day an establishment's data is complete up to), and with
    the existing ones for a new rule (only that one in ``rules``; None: every active
    rule watching the figures). The same figures again change nothing. Only flushes.
    """
    latest = _latest(figures)
    if not latest:
        return
    watching = await _rules_watching(
        session, {f.org_unit for f in latest}, {f.indicator for f in latest}
    )
    steps = []
    for figure in latest:
        for rule in watching.get((figure.org_unit, figure.indicator), ()):
            if rules is not None and rule.id not in rules:
                continue
            deviation = deviation_of(figure, rule.basis)
            breach = deviation is not None and breaches(
                deviation.gap, rule.threshold, rule.direction
            )
            steps.append(_Step(rule, figure, deviation, breach))
    if not steps:
        return
    keys = {(s.rule.id, s.figure.org_unit) for s in steps}
    # Two imports of different establishments both evaluate their territory's alerts:
    # each (rule, org unit) is evaluated by one transaction at a time, in key order.
    await session.execute(_LOCK_ALERTS, {"keys": [f"{rule}:{unit}" for rule, unit in keys]})
    existing = {
        (alert.rule_id, alert.org_unit): alert
        for alert in await session.scalars(
            select(Alert)
            .where(tuple_(Alert.rule_id, Alert.org_unit).in_(sorted(keys)))
            .with_for_update()
        )
    }
    steps = [
        s
        for s in steps
        if (alert := existing.get((s.rule.id, s.figure.org_unit))) is None
        or alert.period <= s.figure.period
    ]
    explained = await _explanations(session, [s for s in steps if s.breach])
    now = datetime.now(UTC)
    events = []
    for step in steps:
        alert = existing.get((step.rule.id, step.figure.org_unit))
        if step.breach:
            contributions = explained.get((step.figure.indicator, step.figure.org_unit), [])
            if alert is None:
                alert = _open(session, step, contributions, now)
                events.append(_raised(alert))
            elif alert.status is AlertStatus.CLOSED:
                _reopen(session, alert, step, contributions, now)
                events.append(_raised(alert))
            else:
                _update(session, alert, step, contributions, now)
        elif alert is not None and alert.status is not AlertStatus.CLOSED:
            reason = "within_threshold" if step.deviation is not None else "no_reference"
            close_alert(session, alert, now, reason, figure=step.figure, deviation=step.deviation)
            events.append(closed_event(alert, reason))
    await session.flush()
    if events:
        _log.info("alerts changed", extra={"count": len(events)})
        await add_events(session, events)


async def _explanations(
    session: AsyncSession, steps: Sequence[_Step]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The children contributing most to each breaching figure's change from last year,
    by (indicator, org unit)."""
    by_indicator: dict[tuple[str, bool], set[tuple[str, date]]] = defaultdict(set)
    for step in steps:
        assert step.deviation is not None
        by_indicator[(step.figure.indicator, step.deviation.year_to_date)].add(
            (step.figure.org_unit, step.figure.period)
        )
    result: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (code, year_to_date), wanted in sorted(by_indicator.items()):
        indicator: Indicator = INDICATORS_BY_CODE[code]
        found = await children_contributions(session, indicator, wanted, year_to_date)
        for (org_unit, _), contributions in found.items():
            result[(code, org_unit)] = [asdict(c) for c in contributions[:MAX_CONTRIBUTIONS]]
    return result


def _state(step: _Step, contributions: list[dict[str, Any]]) -> dict[str, Any]:
    """The alert's columns that the step's figure sets."""
    assert step.deviation is not None
    figure, rule, deviation = step.figure, step.rule, step.deviation
    return {
        "period": figure.period,
        "value": deviation.value,
        "reference": deviation.reference,
        "deviation": deviation.gap,
        "threshold": rule.threshold,
        "unit": deviation.unit,
        "message": alert_message(figure, deviation, rule.basis, rule.threshold),
        "detail_figure": {
            "basis": rule.basis.value,
            "direction": rule.direction.value,
            "rule_org_unit": rule.org_unit,
            "year_to_date": deviation.year_to_date,
            "contributions": contributions,
        },
    }


def _apply(alert: Alert, state: dict[str, Any]) -> None:
    for name, value in state.items():
        if name != "detail_figure":
            setattr(alert, name, value)
    alert.detail = {**alert.detail, **state["detail_figure"]}


def record_change(
    session: AsyncSession,
    alert: Alert,
    change: AlertChangeKind,
    now: datetime,
    *,
    by: str | None = None,
) -> None:
    """Keep the alert's state after ``change`` in its history (``by``: who, for a person's act)."""
    session.add(
        AlertChange(
            alert_id=alert.id,
            at=now,
            change=change,
            period=alert.period,
            value=alert.value,
            reference=alert.reference,
            deviation=alert.deviation,
            by=by,
        )
    )


def _open(
    session: AsyncSession, step: _Step, contributions: list[dict[str, Any]], now: datetime
) -> Alert:
    alert = Alert(
        id=uuid.uuid4(),
        rule_id=step.rule.id,
        indicator=step.figure.indicator,
        org_unit=step.figure.org_unit,
        finess=step.figure.finess,
        opened_period=step.figure.period,
        status=AlertStatus.OPEN,
        raised_at=now,
        updated_at=now,
        closed_at=None,
        detail={},
    )
    _apply(alert, _state(step, contributions))
    session.add(alert)
    record_change(session, alert, AlertChangeKind.OPENED, now)
    return alert


def _reopen(
    session: AsyncSession,
    alert: Alert,
    step: _Step,
    contributions: list[dict[str, Any]],
    now: datetime,
) -> None:
    _apply(alert, _state(step, contributions))
    alert.status = AlertStatus.OPEN
    alert.opened_period = step.figure.period
    alert.raised_at = alert.updated_at = now
    alert.closed_at = None
    alert.detail = {
        k: v for k, v in alert.detail.items() if not k.startswith(("closed_", "acknowledged_"))
    }
    record_change(session, alert, AlertChangeKind.REOPENED, now)


def _update(
    session: AsyncSession,
    alert: Alert,
    step: _Step,
    contributions: list[dict[str, Any]],
    now: datetime,
) -> None:
    state = _state(step, contributions)
    seen = (alert.period, alert.value, alert.reference, alert.deviation, alert.threshold)
    _apply(alert, state)
    if seen != (alert.period, alert.value, alert.reference, alert.deviation, alert.threshold):
        alert.updated_at = now
        record_change(session, alert, AlertChangeKind.UPDATED, now)


def close_alert(
    session: AsyncSession,
    alert: Alert,
    now: datetime,
    reason: str,
    *,
    figure: Figures | None = None,
    deviation: Deviation | None = None,
    by: str | None = None,
) -> None:
    """Close an open or acknowledged alert (``reason``: ``within_threshold``,
    ``no_reference``, ``rule_deleted``), at the month of ``figure`` when one closes it."""
    if figure is not None:
        alert.period = figure.period
        alert.value = deviation.value if deviation else None
        alert.reference = deviation.reference if deviation else None
        alert.deviation = deviation.gap if deviation else None
    alert.status = AlertStatus.CLOSED
    alert.closed_at = alert.updated_at = now
    alert.detail = {**alert.detail, "closed_reason": reason}
    record_change(session, alert, AlertChangeKind.CLOSED, now, by=by)


def _raised(alert: Alert) -> Event:
    return AlertRaised(
        alert=alert.id,
        rule=alert.rule_id,
        indicator=alert.indicator,
        org_unit=alert.org_unit,
        period=alert.period.strftime("%Y-%m"),
        value=alert.value,
        reference=alert.reference,
        deviation=alert.deviation if alert.deviation is not None else 0.0,
        threshold=alert.threshold,
        unit=alert.unit,
        basis=alert.detail["basis"],
        direction=alert.detail["direction"],
        message=alert.message,
    ).event(source=SOURCE, establishment=alert.finess)


def closed_event(alert: Alert, reason: str) -> Event:
    """The ``alert.closed`` event of a closed alert."""
    return AlertClosed(
        alert=alert.id,
        rule=alert.rule_id,
        indicator=alert.indicator,
        org_unit=alert.org_unit,
        period=alert.period.strftime("%Y-%m"),
        reason=reason,
    ).event(source=SOURCE, establishment=alert.finess)
