"""An index on the pending designations of a company.

A decision that misses the cache reads them with its other facts (the reason of a
denial); without this index, a search's many companies made PostgreSQL scan the table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_delegations_pending_company"


def upgrade() -> None:
    if NAME in {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("delegations")}:
        return  # a database adopted from metadata.create_all already has it
    op.create_index(NAME, "delegations", ["company_siret"],
                    sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_index(NAME, table_name="delegations")
