"""The analytics' cube: each unit-month's measures by kind, mode and severity, kept by the
merges like ``unit_month`` (ADR 0021); filled here from the records already stored.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 17:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The measures of unit_month at this revision but occupied_days (a stay's months').
MEASURES = (
    "stays_full",
    "stays_ambulatory",
    "stay_days",
    "stays_severity_34",
    "surgical_stays",
    "surgical_stays_ambulatory",
    "stay_valuation",
    "outpatient_acts",
    "outpatient_acts_coded",
    *(f"coding_delay_b{i:02d}" for i in range(16)),
    "imaging_exams",
    "consultations",
    "revenue",
    "expenses_title_1",
    "expenses_title_2",
    "expenses_title_3",
    "expenses_title_4",
)
KEYS = ("unit", "month", "kind", "mode", "severity")


# The catalogue's sums at this revision (merge.cube_contribution_sql over the records), as
# the merges add them, frozen here: a later change of the measures has its own migration.
BACKFILL = """
INSERT INTO activity_cube (unit, month, kind, mode, severity, stays_full, stays_ambulatory,
    stay_days, stays_severity_34, surgical_stays, surgical_stays_ambulatory, stay_valuation,
    outpatient_acts, outpatient_acts_coded, coding_delay_b00, coding_delay_b01,
    coding_delay_b02, coding_delay_b03, coding_delay_b04, coding_delay_b05,
    coding_delay_b06, coding_delay_b07, coding_delay_b08, coding_delay_b09,
    coding_delay_b10, coding_delay_b11, coding_delay_b12, coding_delay_b13,
    coding_delay_b14, coding_delay_b15, imaging_exams, consultations, revenue,
    expenses_title_1, expenses_title_2, expenses_title_3, expenses_title_4)
SELECT d.unit, d.month, d.kind AS kind, coalesce(d.mode, '') AS mode, coalesce(d.severity,
    0) AS severity, coalesce(count(*) FILTER (WHERE d.kind = 'stay' AND (d.mode = 'full')),
    0) AS stays_full, coalesce(count(*) FILTER (WHERE d.kind = 'stay' AND (d.mode =
    'ambulatory')), 0) AS stays_ambulatory,
coalesce(sum((d.stay_days)) FILTER (WHERE d.kind = 'stay' AND (d.mode = 'full')), 0) AS
    stay_days, coalesce(count(*) FILTER (WHERE d.kind = 'stay' AND (d.mode = 'full' AND
    d.severity >= 3)), 0) AS stays_severity_34, coalesce(count(*) FILTER (WHERE d.kind =
    'stay' AND (substr(d.drg, 3, 1) = 'C')), 0) AS surgical_stays, coalesce(count(*) FILTER
    (WHERE d.kind = 'stay' AND (substr(d.drg, 3, 1) = 'C' AND d.mode = 'ambulatory')), 0) AS
    surgical_stays_ambulatory,
coalesce(sum((coalesce(d.amount, 0))) FILTER (WHERE d.kind = 'stay' AND (TRUE)), 0) AS
    stay_valuation, coalesce(count(*) FILTER (WHERE d.kind = 'outpatient_act' AND (TRUE)),
    0) AS outpatient_acts, coalesce(count(*) FILTER (WHERE d.kind = 'outpatient_act' AND
    (d.coded)), 0) AS outpatient_acts_coded, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 0 AND (d.coded_on -
    d.occurred_on) <= 0)), 0) AS coding_delay_b00, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 1 AND (d.coded_on -
    d.occurred_on) <= 1)), 0) AS coding_delay_b01, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 2 AND (d.coded_on -
    d.occurred_on) <= 2)), 0) AS coding_delay_b02, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 3 AND (d.coded_on -
    d.occurred_on) <= 3)), 0) AS coding_delay_b03, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 4 AND (d.coded_on -
    d.occurred_on) <= 4)), 0) AS coding_delay_b04, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 5 AND (d.coded_on -
    d.occurred_on) <= 5)), 0) AS coding_delay_b05, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 6 AND (d.coded_on -
    d.occurred_on) <= 6)), 0) AS coding_delay_b06, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 7 AND (d.coded_on -
    d.occurred_on) <= 7)), 0) AS coding_delay_b07, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 8 AND (d.coded_on -
    d.occurred_on) <= 10)), 0) AS coding_delay_b08, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 11 AND (d.coded_on -
    d.occurred_on) <= 14)), 0) AS coding_delay_b09, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 15 AND (d.coded_on -
    d.occurred_on) <= 21)), 0) AS coding_delay_b10, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 22 AND (d.coded_on -
    d.occurred_on) <= 30)), 0) AS coding_delay_b11, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 31 AND (d.coded_on -
    d.occurred_on) <= 45)), 0) AS coding_delay_b12, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 46 AND (d.coded_on -
    d.occurred_on) <= 60)), 0) AS coding_delay_b13, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 61 AND (d.coded_on -
    d.occurred_on) <= 90)), 0) AS coding_delay_b14, coalesce(count(*) FILTER (WHERE d.kind =
    'outpatient_act' AND (d.coded AND (d.coded_on - d.occurred_on) >= 91)), 0) AS
    coding_delay_b15, coalesce(count(*) FILTER (WHERE d.kind = 'imaging_exam' AND (TRUE)),
    0) AS imaging_exams, coalesce(count(*) FILTER (WHERE d.kind = 'consultation' AND
    (TRUE)), 0) AS consultations,
coalesce(sum((d.amount)) FILTER (WHERE d.kind = 'revenue' AND (TRUE)), 0) AS revenue,
coalesce(sum((d.amount)) FILTER (WHERE d.kind = 'expense' AND (d.budget_title = 1)), 0) AS
    expenses_title_1,
coalesce(sum((d.amount)) FILTER (WHERE d.kind = 'expense' AND (d.budget_title = 2)), 0) AS
    expenses_title_2,
coalesce(sum((d.amount)) FILTER (WHERE d.kind = 'expense' AND (d.budget_title = 3)), 0) AS
    expenses_title_3,
coalesce(sum((d.amount)) FILTER (WHERE d.kind = 'expense' AND (d.budget_title = 4)), 0) AS
    expenses_title_4
FROM activity_record d GROUP BY 1, 2, 3, 4, 5
"""


def upgrade() -> None:
    op.create_table(
        "activity_cube",
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        *(sa.Column(m, sa.Double(), server_default="0", nullable=False) for m in MEASURES),
        sa.PrimaryKeyConstraint(*KEYS),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("activity_cube")
