"""Records indexed in the drill-down's order: unit, month, kind, day, then their key.

The index on ``(unit, month)`` becomes ``(unit, month, kind, occurred_on, finess, source,
source_id)``: the drill-down pages and the export of a month read the records of their
units in this order, from the cursor on, with no sort; a partial month's sums read the
days up to the cut (or after it) of the kinds they count only; what read ``(unit,
month)`` still does.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["unit", "month", "kind", "occurred_on", "finess", "source", "source_id"]


def upgrade() -> None:
    op.create_index("activity_record_unit_day", "activity_record", KEY)
    op.drop_index("activity_record_unit_month", table_name="activity_record")


def downgrade() -> None:
    op.create_index("activity_record_unit_month", "activity_record", ["unit", "month"])
    op.drop_index("activity_record_unit_day", table_name="activity_record")
