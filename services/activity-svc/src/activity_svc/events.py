"""What activity-svc publishes (EVENTS.md), as builders of the outbox events.

Every builder returns an event to store with :func:`ght_shared.outbox.add_events` in the
transaction of the change. The consumers of the other services' streams are wired in
:mod:`activity_svc.consumers`.
"""

from __future__ import annotations

from typing import Any

from ght_shared.events import Event, new_event

SOURCE = "activity-svc"
STREAM = "ACTIVITY"

ORG_UNIT_UPSERTED = "ght.referential.orgunit.upserted.v1"
BATCH_INGESTED = "ght.activity.batch.ingested.v1"
INDICATOR_UPDATED = "ght.activity.indicator.updated.v1"
ALERT_RAISED = "ght.activity.alert.raised.v1"

# What activity-svc consumes from the other services.
CONTRACT_SIGNED = "ght.contracts.contract.signed"
CONTRACT_AMENDED = "ght.contracts.contract.amended"
CAPACITY_CHANGED = "ght.beds.capacity.changed"


def _event(event_type: str, subject: str, data: dict[str, Any], finess: str | None) -> Event:
    return new_event(
        source=SOURCE, type=event_type, subject=subject, data=data, establishment=finess
    )


def org_unit_upserted(data: dict[str, Any], finess: str | None) -> Event:
    """``data``: code, kind, name, parent, finess, uf, specialty, active, valid_from."""
    return _event(ORG_UNIT_UPSERTED, f"orgunit/{data['code']}", data, finess)


def batch_ingested(data: dict[str, Any], finess: str | None) -> Event:
    """``data``: batch, source(s), establishment, period, accepted, rejected, format."""
    return _event(BATCH_INGESTED, f"import/{data['batch']}", data, finess)


def indicator_updated(data: dict[str, Any], finess: str | None) -> Event:
    """``data``: indicator, org_unit, period, value, same_period_last_year, year_to_date..."""
    subject = f"indicator/{data['indicator']}/{data['org_unit']}"
    return _event(INDICATOR_UPDATED, subject, data, finess)


def alert_raised(data: dict[str, Any], finess: str | None) -> Event:
    """``data``: alert, rule, indicator, org_unit, period, deviation, threshold, message."""
    return _event(ALERT_RAISED, f"alert/{data['alert']}", data, finess)
