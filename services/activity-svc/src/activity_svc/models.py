"""Tables of activity-svc.

Three groups:

- the territory referential: ``org_unit`` (what does not change: code, kind,
  establishment, UF code), ``org_unit_version`` (what changes with dates of
  validity: parent, name, active), ``unit_capacity`` (installed beds over time) and
  ``org_unit_membership``, derived from the versions: for each unit (UF), which
  org units it rolls up to over which dates;
- activity: ``activity_record`` (one row per record, keyed by ``(source, source_id)``),
  ``unit_month`` (the measures of one unit in one month, maintained incrementally),
  ``unit_day`` (the same by day, for the partial months), ``activity_cube`` (by record
  attributes, for the analytics),
  ``record_import``, ``import_rejection`` and ``data_completeness`` (how far each
  establishment's data is complete);
- steering: ``target``, ``alert_rule``, ``alert`` and ``alert_change`` (its history),
  ``figure_comment`` (what a person wrote of a figure).

Dates of validity are half-open: ``valid_from <= day < valid_to`` (``valid_to`` NULL
means still valid).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import text

from activity_svc.catalogue import INDICATORS_BY_CODE, MEASURES, RecordKind, VariationUnit
from ght_shared.columns import EnumText

# --- the values of the text columns that hold one of a few ----------------------------


class OrgUnitKind(StrEnum):
    TERRITORY = "territory"
    ESTABLISHMENT = "establishment"
    SITE = "site"
    POLE = "pole"
    DEPARTMENT = "department"
    UNIT = "unit"


class ImportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"
    JSON = "json"
    """A ``POST /records`` batch."""


class OnError(StrEnum):
    REJECT_FILE = "reject_file"
    """Any rejected row rejects the whole import: nothing is merged."""
    SKIP_ROW = "skip_row"
    """Rejected rows are reported; the others are merged."""


class ImportStatus(StrEnum):
    COMPLETED = "completed"
    COMPLETED_WITH_REJECTIONS = "completed_with_rejections"
    REJECTED = "rejected"


class TargetSource(StrEnum):
    MANUAL = "manual"
    CONTRACT = "contract"


class AlertBasis(StrEnum):
    LAST_YEAR = "last_year"
    TARGET = "target"


class AlertDirection(StrEnum):
    ABOVE = "above"
    BELOW = "below"
    EITHER = "either"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class AlertChangeKind(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"
    REOPENED = "reopened"


class Base(DeclarativeBase):
    pass


# --- territory referential -----------------------------------------------------------


class OrgUnit(Base):
    """An org unit's stable identity: territory, establishment, site, pôle, department, unit."""

    __tablename__ = "org_unit"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('territory', 'establishment', 'site', 'pole', 'department', 'unit')",
            name="org_unit_kind",
        ),
        # A UF code identifies a unit within its establishment (not across the territory).
        UniqueConstraint("finess", "uf", name="org_unit_uf"),
    )

    code: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[OrgUnitKind] = mapped_column(EnumText(OrgUnitKind))
    finess: Mapped[str | None] = mapped_column(Text)
    """The establishment the unit belongs to (its own number for an establishment)."""
    uf: Mapped[str | None] = mapped_column(Text)
    """The UF code of a unit, as the establishment's IT systems know it."""
    specialty: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OrgUnitVersion(Base):
    """What an org unit was (parent, name, active) from ``valid_from`` until ``valid_to``."""

    __tablename__ = "org_unit_version"
    __table_args__ = (
        CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="version_dates"),
        Index("org_unit_version_parent", "parent"),
    )

    code: Mapped[str] = mapped_column(ForeignKey("org_unit.code"), primary_key=True)
    valid_from: Mapped[date] = mapped_column(Date, primary_key=True)
    valid_to: Mapped[date | None] = mapped_column(Date)
    parent: Mapped[str | None] = mapped_column(ForeignKey("org_unit.code"))
    name: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(Text)


class UnitCapacity(Base):
    """Installed beds of a unit from ``effective_from`` (set on the unit, or from beds-svc)."""

    __tablename__ = "unit_capacity"

    unit: Mapped[str] = mapped_column(ForeignKey("org_unit.code"), primary_key=True)
    effective_from: Mapped[date] = mapped_column(Date, primary_key=True)
    installed_beds: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    """``referential`` (set on the unit) or ``beds`` (from ``ght.beds.capacity.changed``)."""


class OrgUnitMembership(Base):
    """Unit ``unit`` rolls up to ``ancestor`` from ``valid_from`` until ``valid_to``.

    Derived from the versions (recomputed when the tree changes); every unit is its
    own ancestor at depth 0. "As it was" reads the rows valid in each month; "constant
    scope" reads the rows valid today for every month.
    """

    __tablename__ = "org_unit_membership"
    __table_args__ = (Index("org_unit_membership_ancestor", "ancestor", "valid_from"),)

    unit: Mapped[str] = mapped_column(ForeignKey("org_unit.code"), primary_key=True)
    ancestor: Mapped[str] = mapped_column(ForeignKey("org_unit.code"), primary_key=True)
    valid_from: Mapped[date] = mapped_column(Date, primary_key=True)
    valid_to: Mapped[date | None] = mapped_column(Date)
    depth: Mapped[int] = mapped_column(SmallInteger)


# --- activity -------------------------------------------------------------------------


class ActivityRecord(Base):
    """One activity record; sending the same ``(source, source_id)`` again replaces it.

    One table for every kind (the columns a kind does not use stay NULL): the merge of
    an import and the drill-down read one table. ``month`` is the month the record
    counts in: the discharge month of a stay, the date of anything else.
    """

    __tablename__ = "activity_record"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('stay', 'outpatient_act', 'imaging_exam', 'consultation', 'expense',"
            " 'revenue')",
            name="activity_record_kind",
        ),
        # The drill-down's order (see indicators.records): a month's records of a unit and
        # kind, day by day; a partial month's days up to a cut.
        Index(
            "activity_record_unit_day",
            "unit",
            "month",
            "kind",
            "occurred_on",
            "finess",
            "source",
            "source_id",
        ),
        # The coding worklist: the acts not coded yet, a small share of the records.
        Index(
            "activity_record_uncoded",
            "unit",
            "occurred_on",
            postgresql_where=text("kind = 'outpatient_act' AND NOT coded"),
        ),
        # source_id first: an import's merge sorts its rows in this order (see
        # ingestion.merge), which is fast on source_ids and writes each page once.
        PrimaryKeyConstraint("source_id", "finess", "source", name="activity_record_pkey"),
    )

    finess: Mapped[str] = mapped_column(Text)
    """The establishment: a record's key is within it, so no system reaches another's."""
    source: Mapped[str] = mapped_column(Text)
    source_id: Mapped[str] = mapped_column(Text)
    kind: Mapped[RecordKind] = mapped_column(EnumText(RecordKind))
    unit: Mapped[str] = mapped_column(Text)
    """The org unit code of the record's unit (resolved from its FINESS and UF code)."""
    uf: Mapped[str] = mapped_column(Text)
    month: Mapped[date] = mapped_column(Date)
    occurred_on: Mapped[date] = mapped_column(Date)
    admitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    discharged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    drg: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[int | None] = mapped_column(SmallInteger)
    mode: Mapped[str | None] = mapped_column(Text)
    stay_days: Mapped[int | None] = mapped_column(Integer)
    code: Mapped[str | None] = mapped_column(Text)
    code_system: Mapped[str | None] = mapped_column(Text)
    coded: Mapped[bool | None] = mapped_column(Boolean)
    coded_on: Mapped[date | None] = mapped_column(Date)
    budget_title: Mapped[int | None] = mapped_column(SmallInteger)
    account: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    import_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _measure_columns(*, spread: bool = True) -> dict[str, Any]:
    return {
        measure.name: mapped_column(Double, nullable=False, default=0, server_default="0")
        for measure in MEASURES
        if spread or not measure.spread
    }


class UnitMonth(Base):
    """The measures of one unit in one month (columns named after ``catalogue.MEASURES``).

    Maintained incrementally by each merge (new contributions minus replaced ones);
    indicators sum these columns over a subtree, then divide: a ratio is never averaged.
    """

    __tablename__ = "unit_month"

    unit: Mapped[str] = mapped_column(Text, primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    locals().update(_measure_columns())


class ActivityCube(Base):
    """The measures of one unit in one month by kind, mode and severity ('' or 0 where a
    record has none), for the analytics.

    Maintained with ``unit_month`` by each merge and withdrawal; the spread measure (days
    present) is not kept: it follows a stay's months, not its attributes.
    """

    __tablename__ = "activity_cube"

    unit: Mapped[str] = mapped_column(Text, primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    mode: Mapped[str] = mapped_column(Text, primary_key=True)
    severity: Mapped[int] = mapped_column(SmallInteger, primary_key=True)

    locals().update(_measure_columns(spread=False))


class UnitDay(Base):
    """The measures of one unit on one day (the day its records occurred on: a stay's
    discharge day), for the partial months: a month's figures up to the day its data is
    complete up to are summed from here, not from the records.

    Maintained with ``unit_month`` by each merge and withdrawal; the spread measure (days
    present) is not kept, as in ``activity_cube``.
    """

    __tablename__ = "unit_day"

    unit: Mapped[str] = mapped_column(Text, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)

    locals().update(_measure_columns(spread=False))


class RecordImport(Base):
    """One ingestion: a file upload (CSV, NDJSON) or a JSON batch, and what became of it."""

    __tablename__ = "record_import"
    __table_args__ = (
        CheckConstraint(
            "status IN ('completed', 'completed_with_rejections', 'rejected')",
            name="record_import_status",
        ),
        Index("record_import_created", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    format: Mapped[ImportFormat] = mapped_column(EnumText(ImportFormat))
    on_error: Mapped[OnError] = mapped_column(EnumText(OnError))
    status: Mapped[ImportStatus] = mapped_column(EnumText(ImportStatus))
    filename: Mapped[str | None] = mapped_column(Text)
    submitted_by: Mapped[str] = mapped_column(Text)
    establishments: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    unchanged: Mapped[int] = mapped_column(BigInteger, default=0)
    months: Mapped[list[date]] = mapped_column(ARRAY(Date), default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)


class ImportRejection(Base):
    """A rejected row of an import: where (line), which field, why."""

    __tablename__ = "import_rejection"

    import_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("record_import.id", ondelete="CASCADE"), primary_key=True
    )
    line: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    field: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    source_id: Mapped[str | None] = mapped_column(Text)


# --- steering: targets and alerts -----------------------------------------------------


class DataCompleteness(Base):
    """How far an establishment's data is complete: the day its system declared with an
    import, else the last day its records cover that had ended when they were received
    (ADR 0018)."""

    __tablename__ = "data_completeness"

    finess: Mapped[str] = mapped_column(ForeignKey("org_unit.code"), primary_key=True)
    declared_up_to: Mapped[date | None] = mapped_column(Date)
    declared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    declared_by: Mapped[str | None] = mapped_column(Text)
    last_day_received: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Target(Base):
    """The target of an indicator for an org unit and a year, optionally profiled by month.

    ``monthly_profile`` (12 weights summing to 1) spreads a volume target over the
    months; a rate target is the same every month.
    """

    __tablename__ = "target"

    indicator: Mapped[str] = mapped_column(Text, primary_key=True)
    org_unit: Mapped[str] = mapped_column(ForeignKey("org_unit.code"), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    monthly_profile: Mapped[list[float] | None] = mapped_column(ARRAY(Double))
    source: Mapped[TargetSource] = mapped_column(EnumText(TargetSource))
    """``manual`` (``PUT /targets``) or ``contract`` (from a signed contract's objective)."""
    contract: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(Text)


class AlertRule(Base):
    """Raise an alert when an indicator's variation or gap to target passes a threshold."""

    __tablename__ = "alert_rule"
    __table_args__ = (
        CheckConstraint("basis IN ('last_year', 'target')", name="alert_rule_basis"),
        CheckConstraint("direction IN ('above', 'below', 'either')", name="alert_rule_direction"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    indicator: Mapped[str] = mapped_column(Text)
    org_unit: Mapped[str] = mapped_column(ForeignKey("org_unit.code"))
    """The rule watches this org unit and every org unit below it."""
    basis: Mapped[AlertBasis] = mapped_column(EnumText(AlertBasis))
    threshold: Mapped[float] = mapped_column(Double)
    """In points for a rate (its indicator in %), in % of the reference otherwise."""
    direction: Mapped[AlertDirection] = mapped_column(EnumText(AlertDirection))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)

    @property
    def threshold_unit(self) -> VariationUnit:
        return INDICATORS_BY_CODE[self.indicator].variation_unit


class Alert(Base):
    """A rule's alert on one org unit, following the months: opened when a complete month
    passes the threshold, updated by the months after it, closed when one comes back
    within it (or the rule is deleted), reopened if one passes it again."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("rule_id", "org_unit", name="alert_per_rule"),
        Index("alert_raised_at", "raised_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    rule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alert_rule.id", ondelete="CASCADE"))
    indicator: Mapped[str] = mapped_column(Text)
    org_unit: Mapped[str] = mapped_column(ForeignKey("org_unit.code"))
    finess: Mapped[str | None] = mapped_column(Text)
    period: Mapped[date] = mapped_column(Date)
    """The month it reads: the latest evaluated."""
    opened_period: Mapped[date] = mapped_column(Date)
    """The month it was (last) opened for."""
    value: Mapped[float | None] = mapped_column(Double)
    reference: Mapped[float | None] = mapped_column(Double)
    deviation: Mapped[float | None] = mapped_column(Double)
    """From the reference, in ``unit`` (None once there is no reference any more)."""
    threshold: Mapped[float] = mapped_column(Double)
    unit: Mapped[str] = mapped_column(Text)
    """``points`` (a rate) or ``%`` of the reference."""
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[AlertStatus] = mapped_column(EnumText(AlertStatus), default=AlertStatus.OPEN)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When it was (last) opened."""
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    """Basis, direction, the rule's org unit, year to date or month, the children
    contributing most, acknowledgement, why it closed."""


class AlertChange(Base):
    """One step of an alert's history: opened, updated, acknowledged, closed, reopened."""

    __tablename__ = "alert_change"
    __table_args__ = (Index("alert_change_alert", "alert_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alert.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    change: Mapped[AlertChangeKind] = mapped_column(EnumText(AlertChangeKind))
    period: Mapped[date] = mapped_column(Date)
    value: Mapped[float | None] = mapped_column(Double)
    reference: Mapped[float | None] = mapped_column(Double)
    deviation: Mapped[float | None] = mapped_column(Double)
    by: Mapped[str | None] = mapped_column(Text)
    """Who, for a person's change (an acknowledgement, a rule deleted)."""


class FigureComment(Base):
    """What a person wrote of a figure (an indicator of an org unit in a month): the
    cadre de gestion's explanation of a change, shown with the figure to whoever reads it."""

    __tablename__ = "figure_comment"
    __table_args__ = (
        Index("figure_comment_figure", "org_unit", "indicator", "month", "written_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    indicator: Mapped[str] = mapped_column(Text)
    org_unit: Mapped[str] = mapped_column(ForeignKey("org_unit.code"))
    finess: Mapped[str | None] = mapped_column(Text)
    """The org unit's establishment (None: the territory), for the rights of lists."""
    month: Mapped[date] = mapped_column(Date)
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(Text)
    """The token's subject."""
    author_name: Mapped[str] = mapped_column(Text)
    """The person's name as the token gave it (the subject without one)."""
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
