"""Impact reports computed in the background, readable from any process.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "impact_reports" in sa.inspect(op.get_bind()).get_table_names():
        return  # a database adopted from metadata.create_all already has it
    op.create_table(
        "impact_reports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=320), nullable=True),
        sa.Column("as_of", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("policy_version", sa.String(length=16), nullable=False),
        sa.Column("draft_version", sa.String(length=16), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("listed_at_most", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_impact_reports_started_at", "impact_reports", ["started_at"])
    op.create_index("ix_impact_reports_status", "impact_reports", ["status"])


def downgrade() -> None:
    op.drop_index("ix_impact_reports_status", table_name="impact_reports")
    op.drop_index("ix_impact_reports_started_at", table_name="impact_reports")
    op.drop_table("impact_reports")
