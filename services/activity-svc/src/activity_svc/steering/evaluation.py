"""Evaluating the alert rules on fresh figures: raise what passes a threshold, clear what
came back within it.

A rule watches one indicator on an org unit and every org unit below it (today's
tree). Its reference is last year (the year-to-date variation, or the month's when
there is no year to date) or the target (the gap of the year to date to the target's
year to date). When the deviation passes the threshold in the rule's direction, one
alert is raised for the rule, the org unit and the month, with its
``ght.activity.alert.raised`` event. A re-evaluation never raises it twice; once the
deviation is back within the threshold the alert is cleared, and may be raised again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import INDICATORS_BY_CODE
from activity_svc.events import SOURCE
from activity_svc.indicators.figures import Figures
from activity_svc.models import Alert, AlertBasis, AlertDirection, AlertStatus
from ght_shared.outbox import add_events
from ght_shared.payloads.activity import AlertRaised

_log = logging.getLogger(__name__)

# Rows per INSERT: 14 parameters a row stay under asyncpg's 32 767 bind parameters.
_INSERT_CHUNK = 1000


@dataclass(frozen=True)
class Deviation:
    """How far a figure lies from its reference, in % of the reference."""

    value: float
    reference: float
    pct: float
    year_to_date: bool
    """False when last year's year to date is unknown and the month is compared."""


def deviation_of(figures: Figures, basis: AlertBasis) -> Deviation | None:
    """The figure's deviation from the rule's reference; None when it cannot be computed."""
    if basis is AlertBasis.LAST_YEAR:
        if figures.year_to_date_variation_pct is not None:
            if figures.year_to_date is None or figures.year_to_date_last_year is None:
                return None
            return Deviation(
                figures.year_to_date,
                figures.year_to_date_last_year,
                figures.year_to_date_variation_pct,
                year_to_date=True,
            )
        if (
            figures.variation_pct is None
            or figures.value is None
            or figures.same_period_last_year is None
        ):
            return None
        return Deviation(
            figures.value, figures.same_period_last_year, figures.variation_pct, year_to_date=False
        )
    reference = figures.target_year_to_date
    if figures.year_to_date is None or reference is None or reference == 0:
        return None
    pct = (figures.year_to_date - reference) / abs(reference) * 100.0
    return Deviation(figures.year_to_date, reference, pct, year_to_date=True)


def breaches(deviation_pct: float, threshold_pct: float, direction: AlertDirection) -> bool:
    """True when the deviation passes the threshold (strictly) in ``direction``."""
    if direction is AlertDirection.ABOVE:
        return deviation_pct > threshold_pct
    if direction is AlertDirection.BELOW:
        return deviation_pct < -threshold_pct
    return abs(deviation_pct) > threshold_pct


def alert_message(
    figures: Figures, deviation: Deviation, basis: AlertBasis, threshold_pct: float
) -> str:
    """E.g. ``CHU-IMG: Full stays year to date 12.4 % below last year (threshold 10 %)``."""
    indicator = INDICATORS_BY_CODE.get(figures.indicator)
    name = indicator.name if indicator else figures.indicator
    when = "year to date" if deviation.year_to_date else f"in {figures.period:%Y-%m}"
    side = "above" if deviation.pct > 0 else "below"
    if basis is AlertBasis.TARGET:
        reference = "target"
    elif deviation.year_to_date:
        reference = "last year"
    else:
        reference = "the same month last year"
    return (
        f"{figures.org_unit}: {name} {when} {abs(deviation.pct):.1f} % {side} {reference}"
        f" (threshold {threshold_pct:g} %)"
    )


@dataclass(frozen=True)
class _Rule:
    id: uuid.UUID
    indicator: str
    org_unit: str
    basis: AlertBasis
    threshold_pct: float
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
           rule.basis, rule.threshold_pct, rule.direction
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


async def evaluate_alerts(
    session: AsyncSession,
    figures: Sequence[Figures],
    rules: Collection[uuid.UUID] | None = None,
) -> None:
    """Raise the alerts the fresh ``figures`` call for, and clear those they no longer do.

    Called with the recomputed figures after each change of them (an import, a
    capacity, a target), and with the existing ones for a new rule (only that one in
    ``rules``; None: every active rule watching the figures). Applying the same figures
    again raises nothing new (the ``alert_once`` constraint). Only flushes.

    A partial month is not evaluated (its days are not all in): neither raised nor
    cleared until it is complete, when the import that completes it evaluates it.
    """
    figures = [f for f in figures if not f.partial]
    if not figures:
        return
    watching = await _rules_watching(
        session, {f.org_unit for f in figures}, {f.indicator for f in figures}
    )
    if rules is not None:
        watching = {
            key: [rule for rule in found if rule.id in rules] for key, found in watching.items()
        }
    if not any(watching.values()):
        return
    raised: dict[tuple[uuid.UUID, str, date], dict[str, Any]] = {}
    within: set[tuple[uuid.UUID, str, date]] = set()
    now = datetime.now(UTC)
    for figure in figures:
        for rule in watching.get((figure.org_unit, figure.indicator), ()):
            deviation = deviation_of(figure, rule.basis)
            key = (rule.id, figure.org_unit, figure.period)
            # No reference any more (a target removed): nothing to be alerted about.
            if deviation is None or not breaches(deviation.pct, rule.threshold_pct, rule.direction):
                within.add(key)
                raised.pop(key, None)
                continue
            within.discard(key)
            raised[key] = _alert_row(figure, rule, deviation, now)
    if within:
        await _clear(session, within, now)
    rows = list(raised.values())
    for start in range(0, len(rows), _INSERT_CHUNK):
        await _raise(session, rows[start : start + _INSERT_CHUNK])


def _alert_row(figure: Figures, rule: _Rule, deviation: Deviation, now: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "rule_id": rule.id,
        "indicator": figure.indicator,
        "org_unit": figure.org_unit,
        "finess": figure.finess,
        "period": figure.period,
        "value": deviation.value,
        "reference": deviation.reference,
        "deviation_pct": deviation.pct,
        "threshold_pct": rule.threshold_pct,
        "message": alert_message(figure, deviation, rule.basis, rule.threshold_pct),
        "status": AlertStatus.OPEN.value,
        "raised_at": now,
        "detail": {
            "basis": rule.basis.value,
            "direction": rule.direction.value,
            "rule_org_unit": rule.org_unit,
            "year_to_date": deviation.year_to_date,
        },
    }


async def _raise(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert new alerts and reopen cleared ones; publish for exactly those."""
    inserting = pg_insert(Alert).values(rows)
    excluded = inserting.excluded
    statement = inserting.on_conflict_do_update(
        constraint="alert_once",
        set_={
            "status": AlertStatus.OPEN.value,
            "value": excluded.value,
            "reference": excluded.reference,
            "deviation_pct": excluded.deviation_pct,
            "threshold_pct": excluded.threshold_pct,
            "message": excluded.message,
            "raised_at": excluded.raised_at,
            "detail": excluded.detail,
        },
        # An open or acknowledged alert is not raised twice.
        where=Alert.status == AlertStatus.CLEARED.value,
    ).returning(Alert.id, Alert.rule_id, Alert.org_unit, Alert.period)
    result = await session.execute(statement)
    by_key = {(row["rule_id"], row["org_unit"], row["period"]): row for row in rows}
    published = []
    for alert_id, rule_id, org_unit, period in result:
        row = by_key[rule_id, org_unit, period]
        raised = AlertRaised(
            alert=alert_id,
            rule=rule_id,
            indicator=row["indicator"],
            org_unit=org_unit,
            period=period.strftime("%Y-%m"),
            value=row["value"],
            reference=row["reference"],
            deviation=row["deviation_pct"],
            threshold=row["threshold_pct"],
            basis=row["detail"]["basis"],
            direction=row["detail"]["direction"],
            message=row["message"],
        )
        published.append(raised.event(source=SOURCE, establishment=row["finess"]))
    if published:
        _log.info("alerts raised", extra={"count": len(published)})
        await add_events(session, published)


# Clears in one statement however many alerts the figures cover.
_CLEAR = text(
    """
    UPDATE alert
    SET status = 'cleared', detail = alert.detail || CAST(:detail AS jsonb)
    FROM unnest(CAST(:rule_ids AS uuid[]), CAST(:org_units AS text[]), CAST(:periods AS date[]))
        AS cleared (rule_id, org_unit, period)
    WHERE (alert.rule_id, alert.org_unit, alert.period)
        = (cleared.rule_id, cleared.org_unit, cleared.period)
      AND alert.status <> 'cleared'
    """
)


async def _clear(
    session: AsyncSession, keys: set[tuple[uuid.UUID, str, date]], now: datetime
) -> None:
    rule_ids, org_units, periods = zip(*keys, strict=True)
    await session.execute(
        _CLEAR,
        {
            "rule_ids": list(rule_ids),
            "org_units": list(org_units),
            "periods": list(periods),
            "detail": json.dumps({"cleared_at": now.isoformat()}),
        },
    )
