"""Request and response models of targets, alert rules and alerts."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from activity_svc.catalogue import VariationUnit
from activity_svc.indicators.explain import Contribution
from activity_svc.models import (
    Alert,
    AlertBasis,
    AlertChangeKind,
    AlertDirection,
    AlertStatus,
    TargetSource,
)
from ght_shared.schemas import ReadModel, StrictModel

# Strict: a string, a boolean or null is a wrong type, not a number to coerce.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _month(value: object) -> object:
    return value.strftime("%Y-%m") if isinstance(value, date) else value


Month = Annotated[str, BeforeValidator(_month), Field(description="YYYY-MM")]


class TargetPut(StrictModel):
    value: Number = Field(description="The target of the year (a rate: the same every month).")
    monthly_profile: list[Number] | None = Field(
        default=None,
        max_length=12,
        description="Volumes only: 12 non-negative weights, January to December, summing to 1.",
    )


class TargetRead(ReadModel):
    indicator: str
    org_unit: str
    year: int
    value: float
    monthly_profile: list[float] | None
    source: TargetSource
    contract: str | None
    updated_at: datetime
    updated_by: str


class AlertRuleCreate(StrictModel):
    indicator: str = Field(min_length=1, max_length=100)
    org_unit: str = Field(
        min_length=1, max_length=100, description="Watched with every org unit below it."
    )
    basis: AlertBasis = Field(description="Compare with last year or with the target.")
    threshold: Number = Field(
        gt=0,
        le=10_000,
        description="In points for a rate (an indicator in %: 5 = five points below or above"
        " the reference), in % of the reference otherwise.",
    )
    direction: AlertDirection


class AlertRuleRead(ReadModel):
    id: uuid.UUID
    indicator: str
    org_unit: str
    basis: AlertBasis
    threshold: float
    threshold_unit: VariationUnit = Field(description="`points` for a rate, `%` otherwise.")
    direction: AlertDirection
    active: bool
    created_at: datetime
    created_by: str


class AlertRead(ReadModel):
    """A rule's alert on one org unit, following the months (opened, updated, closed)."""

    id: uuid.UUID
    rule_id: uuid.UUID
    indicator: str
    org_unit: str
    finess: str | None
    period: Month = Field(description="The month it reads: the latest complete one evaluated.")
    opened_period: Month = Field(description="The month it was (last) opened for.")
    value: float | None
    reference: float | None
    deviation: float | None = Field(description="The gap from the reference, in `unit`.")
    threshold: float
    unit: VariationUnit
    message: str
    status: AlertStatus
    raised_at: datetime = Field(description="When it was (last) opened.")
    updated_at: datetime
    closed_at: datetime | None
    closed_reason: str | None = Field(
        description="`within_threshold`, `no_reference` or `rule_deleted`; null while open."
    )
    contributions: list[Contribution] = Field(
        description="The children contributing most to the change from last year, biggest"
        " first (none for a median)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_detail(cls, data: Any) -> Any:
        if isinstance(data, Alert):
            detail = data.detail or {}
            return {
                **{name: getattr(data, name) for name in _ALERT_COLUMNS},
                "closed_reason": detail.get("closed_reason"),
                "contributions": detail.get("contributions", []),
            }
        return data


_ALERT_COLUMNS = (
    "id",
    "rule_id",
    "indicator",
    "org_unit",
    "finess",
    "period",
    "opened_period",
    "value",
    "reference",
    "deviation",
    "threshold",
    "unit",
    "message",
    "status",
    "raised_at",
    "updated_at",
    "closed_at",
)


class AlertChangeRead(ReadModel):
    """One step of an alert's history."""

    change: AlertChangeKind
    at: datetime
    period: Month
    value: float | None
    reference: float | None
    deviation: float | None
    by: str | None = Field(description="Who, for a person's change.")
