"""Alerts follow the months: one per rule and org unit, with its history; thresholds
and deviations of rates in points (ADR 0019).

The alerts of a rule on an org unit (one per month until now) are reduced to the latest
month's; ``cleared`` becomes ``closed``. A rule's threshold keeps its number: a rule on
a rate now reads it in points.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("alert_rule", "threshold_pct", new_column_name="threshold")
    op.execute(
        """
        DELETE FROM alert a USING alert b
        WHERE a.rule_id = b.rule_id AND a.org_unit = b.org_unit
          AND (a.period, a.raised_at, a.id) < (b.period, b.raised_at, b.id)
        """
    )
    op.drop_constraint("alert_once", "alert", type_="unique")
    op.create_unique_constraint("alert_per_rule", "alert", ["rule_id", "org_unit"])
    op.alter_column("alert", "deviation_pct", new_column_name="deviation", nullable=True)
    op.alter_column("alert", "threshold_pct", new_column_name="threshold")
    op.add_column("alert", sa.Column("opened_period", sa.Date(), nullable=True))
    op.add_column("alert", sa.Column("unit", sa.Text(), nullable=True))
    op.add_column("alert", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("alert", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        """
        UPDATE alert SET opened_period = period, unit = '%', updated_at = raised_at,
            status = CASE WHEN status = 'cleared' THEN 'closed' ELSE status END,
            closed_at = CASE WHEN status = 'cleared' THEN raised_at END
        """
    )
    for column in ("opened_period", "unit", "updated_at"):
        op.alter_column("alert", column, nullable=False)
    op.create_table(
        "alert_change",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("change", sa.Text(), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("reference", sa.Double(), nullable=True),
        sa.Column("deviation", sa.Double(), nullable=True),
        sa.Column("by", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alert.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("alert_change_alert", "alert_change", ["alert_id", "id"], unique=False)
    op.execute(
        """
        INSERT INTO alert_change (alert_id, at, change, period, value, reference, deviation)
        SELECT id, raised_at, 'opened', period, value, reference, deviation FROM alert
        """
    )


def downgrade() -> None:
    op.drop_index("alert_change_alert", table_name="alert_change")
    op.drop_table("alert_change")
    op.execute("UPDATE alert SET status = 'cleared' WHERE status = 'closed'")
    op.execute("UPDATE alert SET deviation = 0 WHERE deviation IS NULL")
    for column in ("closed_at", "updated_at", "unit", "opened_period"):
        op.drop_column("alert", column)
    op.alter_column("alert", "threshold", new_column_name="threshold_pct")
    op.alter_column("alert", "deviation", new_column_name="deviation_pct", nullable=False)
    op.drop_constraint("alert_per_rule", "alert", type_="unique")
    op.create_unique_constraint("alert_once", "alert", ["rule_id", "org_unit", "period"])
    op.alter_column("alert_rule", "threshold", new_column_name="threshold_pct")
