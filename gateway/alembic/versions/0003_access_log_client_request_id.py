"""Access log: the caller's X-Request-ID beside the gateway's own request id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("access_log", sa.Column("client_request_id", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("access_log", "client_request_id")
