"""Activity figures, owned by activity-svc (stream ``ACTIVITY``)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import ClassVar, Literal

from pydantic import Field

from ght_shared.payloads.base import (
    Count,
    FinessNumber,
    Month,
    Number,
    Payload,
    PayloadPart,
    Visibility,
)

SERVICE = "activity-svc"
STREAM = "ACTIVITY"

BATCH_INGESTED = "ght.activity.batch.ingested.v1"
INDICATOR_UPDATED = "ght.activity.indicator.updated.v1"
ALERT_RAISED = "ght.activity.alert.raised.v1"
ALERT_CLOSED = "ght.activity.alert.closed.v1"


class ImportPeriod(PayloadPart):
    """The months an import's records fall in."""

    from_: Month = Field(alias="from", description="The first month.")
    to: Month = Field(description="The last month.")


class BatchIngested(Payload):
    """Published when an import is committed, once per establishment it holds records of."""

    EVENT_TYPE: ClassVar[str] = BATCH_INGESTED
    SUBJECT: ClassVar[str] = "import/{batch}"
    PUBLISHED: ClassVar[bool] = True
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT
    ESTABLISHMENT_FIELDS: ClassVar[tuple[str, ...]] = ("establishment",)

    batch: uuid.UUID = Field(description="The import's id.")
    source: str | None = Field(description="The import's source system, when it has only one.")
    sources: list[str] = Field(description="The source systems of the import's records.")
    establishment: FinessNumber = Field(description="The FINESS of the establishment counted here.")
    period: ImportPeriod | None = Field(description="The months of its records; null if none.")
    accepted: Count = Field(description="The establishment's records accepted.")
    rejected: Count = Field(description="The establishment's records rejected.")
    format: str = Field(description="The file's format: `csv`, `ndjson` or `json`.")


class IndicatorUpdated(Payload):
    """Published when an indicator's figures for an org unit and a month change: records
    imported, installed beds or a target changed (a producer may send up to ~40 000 per
    import)."""

    EVENT_TYPE: ClassVar[str] = INDICATOR_UPDATED
    SUBJECT: ClassVar[str] = "indicator/{indicator}/{org_unit}"
    PUBLISHED: ClassVar[bool] = True
    # As the REST API: the territory root's figures (no establishment) are territorial.
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT

    indicator: str = Field(description="The indicator's code in activity's catalogue.")
    org_unit: str = Field(description="The org unit's code.")
    period: Month = Field(description="The month.")
    value: Number | None = Field(description="The month's value.")
    same_period_last_year: Number | None = Field(description="The same month a year before.")
    variation: Number | None = Field(
        None,
        description="Variation from last year, in `variation_unit`: % of last year's figure,"
        " or points for a rate.",
    )
    variation_pct: Number | None = Field(
        description="Variation from last year in % of it, for every indicator (for a rate,"
        " read `variation`, in points)."
    )
    year_to_date: Number | None = Field(description="From January to the month.")
    year_to_date_last_year: Number | None = Field(description="The same months a year before.")
    year_to_date_variation: Number | None = Field(
        None, description="Variation of the year to date from last year's, in `variation_unit`."
    )
    year_to_date_variation_pct: Number | None = Field(
        description="Variation of the year to date from last year's, in % of it."
    )
    variation_unit: Literal["%", "points"] = Field(
        "%", description="What `variation` and `year_to_date_variation` are in."
    )
    projection: Number | None = Field(description="The year-end projection.")
    target: Number | None = Field(description="The month's target (the year's, spread).")
    target_year: Number | None = Field(description="The year's target.")
    partial: bool = Field(
        False,
        description="The month is not complete: its figures count its days up to"
        " `complete_up_to`, against the same days last year, with no projection.",
    )
    complete_up_to: date | None = Field(
        None, description="The day the org unit's data is complete up to (absent: unknown)."
    )
    import_id: uuid.UUID | None = Field(
        None, description="The import that caused it; absent for other causes."
    )


class AlertRaised(Payload):
    """Published when an alert opens: a complete month's figures of an org unit pass an
    alert rule's threshold (one alert per rule and org unit, following the months: again
    only after it closed)."""

    EVENT_TYPE: ClassVar[str] = ALERT_RAISED
    SUBJECT: ClassVar[str] = "alert/{alert}"
    PUBLISHED: ClassVar[bool] = True
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT

    alert: uuid.UUID = Field(description="The alert's id.")
    rule: uuid.UUID = Field(description="The alert rule's id.")
    indicator: str = Field(description="The indicator's code.")
    org_unit: str = Field(description="The org unit's code.")
    period: Month = Field(description="The month.")
    value: Number | None = Field(description="The figure compared.")
    reference: Number | None = Field(description="What it is compared with.")
    deviation: Number = Field(description="The gap from the reference, in `unit`.")
    threshold: Number = Field(description="The rule's threshold, in `unit`.")
    unit: Literal["%", "points"] = Field(
        "%", description="`points` for a rate (an indicator in %), % of the reference else."
    )
    basis: Literal["last_year", "target"] = Field(description="What the reference is.")
    direction: Literal["above", "below", "either"] = Field(
        description="Which side of the reference the rule watches."
    )
    message: str = Field(description="The alert in one sentence, for people.")


class AlertClosed(Payload):
    """Published when an alert closes: a later month came back within the threshold, had
    no reference any more, or the rule was deleted."""

    EVENT_TYPE: ClassVar[str] = ALERT_CLOSED
    SUBJECT: ClassVar[str] = "alert/{alert}"
    PUBLISHED: ClassVar[bool] = True
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT

    alert: uuid.UUID = Field(description="The alert's id.")
    rule: uuid.UUID = Field(description="The alert rule's id.")
    indicator: str = Field(description="The indicator's code.")
    org_unit: str = Field(description="The org unit's code.")
    period: Month = Field(description="The month it read when it closed.")
    reason: Literal["within_threshold", "no_reference", "rule_deleted"] = Field(
        description="Why it closed."
    )


PAYLOADS: tuple[type[Payload], ...] = (BatchIngested, IndicatorUpdated, AlertRaised, AlertClosed)
