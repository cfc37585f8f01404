"""Request and response models of targets, alert rules and alerts."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

from pydantic import BeforeValidator, Field

from activity_svc.models import AlertBasis, AlertDirection, AlertStatus, TargetSource
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
    threshold_pct: Number = Field(gt=0, le=10_000, description="In % of the reference.")
    direction: AlertDirection


class AlertRuleRead(ReadModel):
    id: uuid.UUID
    indicator: str
    org_unit: str
    basis: AlertBasis
    threshold_pct: float
    direction: AlertDirection
    active: bool
    created_at: datetime
    created_by: str


class AlertRead(ReadModel):
    id: uuid.UUID
    rule_id: uuid.UUID
    indicator: str
    org_unit: str
    finess: str | None
    period: Month
    value: float | None
    reference: float | None
    deviation_pct: float
    threshold_pct: float
    message: str
    status: AlertStatus
    raised_at: datetime
