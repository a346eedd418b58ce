"""What each data version changed, so that a process forgets only the answers a change touched.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "data_changes" in sa.inspect(op.get_bind()).get_table_names():
        return  # a database adopted from metadata.create_all already has it
    op.create_table(
        "data_changes",
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.String(length=400), nullable=False),
    )
    op.create_index("ix_data_changes_version", "data_changes", ["version"])


def downgrade() -> None:
    op.drop_index("ix_data_changes_version", table_name="data_changes")
    op.drop_table("data_changes")
