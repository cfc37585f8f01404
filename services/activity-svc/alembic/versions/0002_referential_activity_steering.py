"""Territory referential, activity records and monthly measures, imports, targets, alerts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 02:21:23.144126
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "activity_record",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("finess", sa.Text(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("uf", sa.Text(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("occurred_on", sa.Date(), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discharged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("drg", sa.Text(), nullable=True),
        sa.Column("severity", sa.SmallInteger(), nullable=True),
        sa.Column("mode", sa.Text(), nullable=True),
        sa.Column("stay_days", sa.Integer(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("code_system", sa.Text(), nullable=True),
        sa.Column("coded", sa.Boolean(), nullable=True),
        sa.Column("coded_on", sa.Date(), nullable=True),
        sa.Column("budget_title", sa.SmallInteger(), nullable=True),
        sa.Column("account", sa.Text(), nullable=True),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("import_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('stay', 'outpatient_act', 'imaging_exam', 'consultation', 'expense',"
            " 'revenue')",
            name="activity_record_kind",
        ),
        sa.PrimaryKeyConstraint("finess", "source", "source_id"),
    )
    op.create_index(
        "activity_record_unit_month", "activity_record", ["unit", "month"], unique=False
    )
    op.create_table(
        "org_unit",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("finess", sa.Text(), nullable=True),
        sa.Column("uf", sa.Text(), nullable=True),
        sa.Column("specialty", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('territory', 'establishment', 'site', 'pole', 'department', 'unit')",
            name="org_unit_kind",
        ),
        sa.PrimaryKeyConstraint("code"),
        sa.UniqueConstraint("finess", "uf", name="org_unit_uf"),
    )
    op.create_table(
        "record_import",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("on_error", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("submitted_by", sa.Text(), nullable=False),
        sa.Column("establishments", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("unchanged", sa.BigInteger(), nullable=False),
        sa.Column("months", postgresql.ARRAY(sa.Date()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('completed', 'completed_with_rejections', 'rejected')",
            name="record_import_status",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("record_import_created", "record_import", ["created_at"], unique=False)
    op.create_table(
        "unit_month",
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stays_full", sa.Double(), server_default="0", nullable=False),
        sa.Column("stays_ambulatory", sa.Double(), server_default="0", nullable=False),
        sa.Column("stay_days", sa.Double(), server_default="0", nullable=False),
        sa.Column("stays_severity_34", sa.Double(), server_default="0", nullable=False),
        sa.Column("surgical_stays", sa.Double(), server_default="0", nullable=False),
        sa.Column("surgical_stays_ambulatory", sa.Double(), server_default="0", nullable=False),
        sa.Column("stay_valuation", sa.Double(), server_default="0", nullable=False),
        sa.Column("outpatient_acts", sa.Double(), server_default="0", nullable=False),
        sa.Column("outpatient_acts_coded", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b00", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b01", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b02", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b03", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b04", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b05", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b06", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b07", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b08", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b09", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b10", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b11", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b12", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b13", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b14", sa.Double(), server_default="0", nullable=False),
        sa.Column("coding_delay_b15", sa.Double(), server_default="0", nullable=False),
        sa.Column("imaging_exams", sa.Double(), server_default="0", nullable=False),
        sa.Column("consultations", sa.Double(), server_default="0", nullable=False),
        sa.Column("revenue", sa.Double(), server_default="0", nullable=False),
        sa.Column("expenses_title_1", sa.Double(), server_default="0", nullable=False),
        sa.Column("expenses_title_2", sa.Double(), server_default="0", nullable=False),
        sa.Column("expenses_title_3", sa.Double(), server_default="0", nullable=False),
        sa.Column("expenses_title_4", sa.Double(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("unit", "month"),
    )
    op.create_table(
        "alert_rule",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("indicator", sa.Text(), nullable=False),
        sa.Column("org_unit", sa.Text(), nullable=False),
        sa.Column("basis", sa.Text(), nullable=False),
        sa.Column("threshold_pct", sa.Double(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.CheckConstraint("basis IN ('last_year', 'target')", name="alert_rule_basis"),
        sa.CheckConstraint(
            "direction IN ('above', 'below', 'either')", name="alert_rule_direction"
        ),
        sa.ForeignKeyConstraint(
            ["org_unit"],
            ["org_unit.code"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "import_rejection",
        sa.Column("import_id", sa.Uuid(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["import_id"], ["record_import.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("import_id", "line"),
    )
    op.create_table(
        "org_unit_membership",
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("ancestor", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("depth", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ancestor"],
            ["org_unit.code"],
        ),
        sa.ForeignKeyConstraint(
            ["unit"],
            ["org_unit.code"],
        ),
        sa.PrimaryKeyConstraint("unit", "ancestor", "valid_from"),
    )
    op.create_index(
        "org_unit_membership_ancestor",
        "org_unit_membership",
        ["ancestor", "valid_from"],
        unique=False,
    )
    op.create_table(
        "org_unit_version",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("parent", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.Text(), nullable=False),
        sa.CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="version_dates"),
        sa.ForeignKeyConstraint(
            ["code"],
            ["org_unit.code"],
        ),
        sa.ForeignKeyConstraint(
            ["parent"],
            ["org_unit.code"],
        ),
        sa.PrimaryKeyConstraint("code", "valid_from"),
    )
    op.create_index("org_unit_version_parent", "org_unit_version", ["parent"], unique=False)
    op.create_table(
        "target",
        sa.Column("indicator", sa.Text(), nullable=False),
        sa.Column("org_unit", sa.Text(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("monthly_profile", postgresql.ARRAY(sa.Double()), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("contract", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_unit"],
            ["org_unit.code"],
        ),
        sa.PrimaryKeyConstraint("indicator", "org_unit", "year"),
    )
    op.create_table(
        "unit_capacity",
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("installed_beds", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["unit"],
            ["org_unit.code"],
        ),
        sa.PrimaryKeyConstraint("unit", "effective_from"),
    )
    op.create_table(
        "alert",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=False),
        sa.Column("indicator", sa.Text(), nullable=False),
        sa.Column("org_unit", sa.Text(), nullable=False),
        sa.Column("finess", sa.Text(), nullable=True),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("reference", sa.Double(), nullable=True),
        sa.Column("deviation_pct", sa.Double(), nullable=False),
        sa.Column("threshold_pct", sa.Double(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_unit"],
            ["org_unit.code"],
        ),
        sa.ForeignKeyConstraint(["rule_id"], ["alert_rule.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rule_id", "org_unit", "period", name="alert_once"),
    )
    op.create_index("alert_raised_at", "alert", ["raised_at"], unique=False)


def downgrade() -> None:

    op.drop_index("alert_raised_at", table_name="alert")
    op.drop_table("alert")
    op.drop_table("unit_capacity")
    op.drop_table("target")
    op.drop_index("org_unit_version_parent", table_name="org_unit_version")
    op.drop_table("org_unit_version")
    op.drop_index("org_unit_membership_ancestor", table_name="org_unit_membership")
    op.drop_table("org_unit_membership")
    op.drop_table("import_rejection")
    op.drop_table("alert_rule")
    op.drop_table("unit_month")
    op.drop_index("record_import_created", table_name="record_import")
    op.drop_table("record_import")
    op.drop_table("org_unit")
    op.drop_index("activity_record_unit_month", table_name="activity_record")
    op.drop_table("activity_record")
