"""The relational schema (SQLAlchemy Core tables), portable to SQLite and PostgreSQL.

Every index here serves a query in ``store.py``; the comment says which.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    event,
    text,
)


class UTCDateTime(TypeDecorator):
    """Store naive UTC, return aware UTC: SQLite has no time zones, PostgreSQL does."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

SIRET = String(14)
EMAIL = String(254)
ID = String(32)

companies = Table(
    "companies",
    metadata,
    Column("siret", SIRET, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("email", EMAIL, primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
)

company_admins = Table(
    "company_admins",
    metadata,
    Column("company_siret", SIRET, ForeignKey("companies.siret"), primary_key=True),
    Column("user_email", EMAIL, ForeignKey("users.email"), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    # a user's companies (decisions, resource search)
    Index("ix_company_admins_user", "user_email"),
)

firms = Table(
    "firms",
    metadata,
    Column("siret", SIRET, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("manager_email", EMAIL, ForeignKey("users.email"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # the firms a user manages (every decision)
    Index("ix_firms_manager", "manager_email"),
)

collaborators = Table(
    "collaborators",
    metadata,
    Column("firm_siret", SIRET, ForeignKey("firms.siret"), primary_key=True),
    Column("user_email", EMAIL, ForeignKey("users.email"), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    # the firms a user works for (every decision)
    Index("ix_collaborators_user", "user_email"),
)

delegations = Table(
    "delegations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("company_siret", SIRET, ForeignKey("companies.siret"), nullable=False),
    Column("manager_email", EMAIL, nullable=False),
    Column("firm_siret", SIRET, ForeignKey("firms.siret"), nullable=True),
    # stored: pending, active, revoked; "expired" is derived from the clock
    Column("status", String(16), nullable=False),
    # space-separated sorted rights: portable, and small
    Column("scope", Text, nullable=False),
    Column("token_hash", String(64), nullable=True),
    Column("token_expires_at", UTCDateTime, nullable=True),
    Column("ends_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("activated_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    # a company's delegations (decisions, listing)
    Index("ix_delegations_company_firm", "company_siret", "firm_siret"),
    # a firm's clients (resource search, client list)
    Index("ix_delegations_firm_status", "firm_siret", "status"),
    # activation by token
    Index("ux_delegations_token", "token_hash", unique=True),
    # one active delegation per company-firm pair, enforced by the database too
    Index(
        "ux_delegations_active_pair",
        "company_siret",
        "firm_siret",
        unique=True,
        sqlite_where=text("status = 'active'"),
        postgresql_where=text("status = 'active'"),
    ),
    # a company's pending designations (a denial's reason, activation); small, and it
    # spares PostgreSQL a scan of the table for the many companies of a search
    Index(
        "ix_delegations_pending_company",
        "company_siret",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)

grants = Table(
    "grants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("firm_siret", SIRET, ForeignKey("firms.siret"), nullable=False),
    Column("collaborator_email", EMAIL, ForeignKey("users.email"), nullable=False),
    Column("company_siret", SIRET, ForeignKey("companies.siret"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("scope", Text, nullable=False),
    Column("ends_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    # a collaborator's grants on one company (decisions) and all of them (search)
    Index("ix_grants_collaborator_company", "collaborator_email", "company_siret"),
    # who holds grants on a company (subject search)
    Index("ix_grants_company", "company_siret"),
    # a firm's grants (listing, collaborator removal)
    Index("ix_grants_firm", "firm_siret", "collaborator_email"),
    Index(
        "ux_grants_active_triple",
        "firm_siret",
        "collaborator_email",
        "company_siret",
        unique=True,
        sqlite_where=text("status = 'active'"),
        postgresql_where=text("status = 'active'"),
    ),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    # SHA-256 of the key: keys are 256-bit random, so a slow hash adds nothing
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(254), nullable=False),
    Column("action", String(64), nullable=False),
    Column("company_siret", SIRET, nullable=True),
    Column("firm_siret", SIRET, nullable=True),
    Column("subject_email", EMAIL, nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("details", JSON, nullable=False),
    Column("request_id", String(200), nullable=True),
    Index("ix_audit_company", "company_siret", "id"),
    Index("ix_audit_actor", "actor", "id"),
    Index("ix_audit_subject", "subject_email", "id"),
    Index("ix_audit_at", "at"),
)


# One row per policy change seen by the file watchers: every worker notices the same
# edit, and only the first to record it writes the audit record.
policy_events = Table(
    "policy_events",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)


# Every policy a process accepted, so that a worker starting while the files on disk are
# refused can serve the last accepted policy instead of failing to boot.
policy_snapshots = Table(
    "policy_snapshots",
    metadata,
    Column("version", String(16), primary_key=True),
    Column("sources", JSON, nullable=False),
    Column("accepted_at", UTCDateTime, nullable=False),
    Index("ix_policy_snapshots_accepted_at", "accepted_at"),
)


# Impact reports computed in the background (``authz.impact_jobs``): a national store takes
# a minute, longer than a request may last. Kept here, any process can answer the polls.
impact_reports = Table(
    "impact_reports",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),  # running, done, failed
    Column("requested_by", String(320)),
    Column("as_of", UTCDateTime, nullable=False),  # the instant the facts are read at
    Column("started_at", UTCDateTime, nullable=False),  # wall clock, like heartbeat_at
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("policy_version", String(16), nullable=False),
    Column("draft_version", String(16), nullable=False),
    Column("sources", JSON, nullable=False),  # {"running": {...}, "draft": {...}}
    Column("listed_at_most", Integer, nullable=False),
    Column("report", JSON),
    Column("error", Text),
    Index("ix_impact_reports_started_at", "started_at"),  # purge of old reports
    Index("ix_impact_reports_status", "status"),  # how many are running
)


# A counter bumped in the transaction of every change (with its audit record): a
# process may keep answers only while the counter it saw is still the current one.
data_version = Table(
    "data_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)
event.listen(data_version, "after_create", DDL("INSERT INTO data_version (id, version) VALUES (1, 0)"))

# What each version changed, written in the same transaction as the bump: the scopes
# ("company:<siret>", "user:<email>", "keys", or "*" for anything) whose cached answers
# it may have changed. A process that saw version A and now reads B forgets only the
# answers of the scopes of A+1 .. B, and everything when one of them is missing.
data_changes = Table(
    "data_changes",
    metadata,
    Column("version", BigInteger, nullable=False),
    Column("scope", String(400), nullable=False),
    Index("ix_data_changes_version", "version"),  # the changes between two versions; the purge
)


def utcnow() -> datetime:
    return datetime.now(UTC)
