"""Infrastructure tables: outbox, aggregate sequences, inbox, dead letters, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from ght_shared.migrations import create_infra_v1, drop_infra_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_infra_v1()


def downgrade() -> None:
    drop_infra_v1()
