"""Policy snapshots: the policies processes accepted, for workers that start while the
files on disk are refused.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "policy_snapshots" in sa.inspect(op.get_bind()).get_table_names():
        return  # a database adopted from metadata.create_all already has it
    op.create_table(
        "policy_snapshots",
        sa.Column("version", sa.String(length=16), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_index("ix_policy_snapshots_accepted_at", "policy_snapshots", ["accepted_at"])


def downgrade() -> None:
    op.drop_index("ix_policy_snapshots_accepted_at", table_name="policy_snapshots")
    op.drop_table("policy_snapshots")
