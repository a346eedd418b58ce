"""Initial schema: the tables of the releases before migrations.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

``UTCDateTime`` columns are plain ``DateTime``: the type decorator converts values in
Python only. Index comments are in ``authz/tables.py``.

Adopt mode (``adopt_existing``, set by ``authz.migrate`` for a database that the first
releases made with ``metadata.create_all``): tables that already exist are kept as they
are, only the missing ones are created, and Alembic then records the database at 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIRET = sa.String(length=14)
EMAIL = sa.String(length=254)
ID = sa.String(length=32)
ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    existing: set[str] = set()
    if context.config.attributes.get("adopt_existing"):
        existing = set(sa.inspect(op.get_bind()).get_table_names())

    if "companies" not in existing:
        op.create_table(
            "companies",
            sa.Column("siret", SIRET, nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("siret"),
        )

    if "users" not in existing:
        op.create_table(
            "users",
            sa.Column("email", EMAIL, nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("email"),
        )

    if "company_admins" not in existing:
        op.create_table(
            "company_admins",
            sa.Column("company_siret", SIRET, nullable=False),
            sa.Column("user_email", EMAIL, nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(["company_siret"], ["companies.siret"]),
            sa.ForeignKeyConstraint(["user_email"], ["users.email"]),
            sa.PrimaryKeyConstraint("company_siret", "user_email"),
        )
        op.create_index("ix_company_admins_user", "company_admins", ["user_email"])

    if "firms" not in existing:
        op.create_table(
            "firms",
            sa.Column("siret", SIRET, nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("manager_email", EMAIL, nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(["manager_email"], ["users.email"]),
            sa.PrimaryKeyConstraint("siret"),
        )
        op.create_index("ix_firms_manager", "firms", ["manager_email"])

    if "collaborators" not in existing:
        op.create_table(
            "collaborators",
            sa.Column("firm_siret", SIRET, nullable=False),
            sa.Column("user_email", EMAIL, nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(["firm_siret"], ["firms.siret"]),
            sa.ForeignKeyConstraint(["user_email"], ["users.email"]),
            sa.PrimaryKeyConstraint("firm_siret", "user_email"),
        )
        op.create_index("ix_collaborators_user", "collaborators", ["user_email"])

    if "delegations" not in existing:
        op.create_table(
            "delegations",
            sa.Column("id", ID, nullable=False),
            sa.Column("company_siret", SIRET, nullable=False),
            sa.Column("manager_email", EMAIL, nullable=False),
            sa.Column("firm_siret", SIRET, nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("scope", sa.Text(), nullable=False),
            sa.Column("token_hash", sa.String(length=64), nullable=True),
            sa.Column("token_expires_at", sa.DateTime(), nullable=True),
            sa.Column("ends_at", sa.DateTime(), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("updated_at", sa.DateTime(), nullable=False),
            sa.Column("activated_at", sa.DateTime(), nullable=True),
            sa.Column("revoked_at", sa.DateTime(), nullable=True),
            sa.ForeignKeyConstraint(["company_siret"], ["companies.siret"]),
            sa.ForeignKeyConstraint(["firm_siret"], ["firms.siret"]),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_delegations_company_firm", "delegations", ["company_siret", "firm_siret"])
        op.create_index("ix_delegations_firm_status", "delegations", ["firm_siret", "status"])
        op.create_index("ux_delegations_token", "delegations", ["token_hash"], unique=True)
        op.create_index(
            "ux_delegations_active_pair",
            "delegations",
            ["company_siret", "firm_siret"],
            unique=True,
            sqlite_where=ACTIVE,
            postgresql_where=ACTIVE,
        )

    if "grants" not in existing:
        op.create_table(
            "grants",
            sa.Column("id", ID, nullable=False),
            sa.Column("firm_siret", SIRET, nullable=False),
            sa.Column("collaborator_email", EMAIL, nullable=False),
            sa.Column("company_siret", SIRET, nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("scope", sa.Text(), nullable=False),
            sa.Column("ends_at", sa.DateTime(), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("updated_at", sa.DateTime(), nullable=False),
            sa.Column("revoked_at", sa.DateTime(), nullable=True),
            sa.ForeignKeyConstraint(["firm_siret"], ["firms.siret"]),
            sa.ForeignKeyConstraint(["collaborator_email"], ["users.email"]),
            sa.ForeignKeyConstraint(["company_siret"], ["companies.siret"]),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_grants_collaborator_company", "grants", ["collaborator_email", "company_siret"])
        op.create_index("ix_grants_company", "grants", ["company_siret"])
        op.create_index("ix_grants_firm", "grants", ["firm_siret", "collaborator_email"])
        op.create_index(
            "ux_grants_active_triple",
            "grants",
            ["firm_siret", "collaborator_email", "company_siret"],
            unique=True,
            sqlite_where=ACTIVE,
            postgresql_where=ACTIVE,
        )

    if "api_keys" not in existing:
        op.create_table(
            "api_keys",
            sa.Column("id", ID, nullable=False),
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("key_hash", sa.String(length=64), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("revoked_at", sa.DateTime(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("name"),
            sa.UniqueConstraint("key_hash"),
        )

    if "audit_log" not in existing:
        op.create_table(
            "audit_log",
            # BIGSERIAL on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                autoincrement=True,
                nullable=False,
            ),
            sa.Column("at", sa.DateTime(), nullable=False),
            sa.Column("actor", sa.String(length=254), nullable=False),
            sa.Column("action", sa.String(length=64), nullable=False),
            sa.Column("company_siret", SIRET, nullable=True),
            sa.Column("firm_siret", SIRET, nullable=True),
            sa.Column("subject_email", EMAIL, nullable=True),
            sa.Column("target_id", sa.String(length=64), nullable=True),
            sa.Column("details", sa.JSON(), nullable=False),
            sa.Column("request_id", sa.String(length=200), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_audit_company", "audit_log", ["company_siret", "id"])
        op.create_index("ix_audit_actor", "audit_log", ["actor", "id"])
        op.create_index("ix_audit_subject", "audit_log", ["subject_email", "id"])
        op.create_index("ix_audit_at", "audit_log", ["at"])

    if "policy_events" not in existing:
        op.create_table(
            "policy_events",
            sa.Column("key", sa.String(length=64), nullable=False),
            sa.Column("at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("key"),
        )


def downgrade() -> None:
    for table in (
        "policy_events",
        "audit_log",
        "api_keys",
        "grants",
        "delegations",
        "collaborators",
        "firms",
        "company_admins",
        "users",
        "companies",
    ):
        op.drop_table(table)
