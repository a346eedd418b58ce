"""Schema migrations: Alembic, configured in code so an installed service needs no alembic.ini.

``upgrade(url)`` brings a database to the newest revision in ``authz/migrations/versions``
(and adopts a database made before migrations existed); ``current(url)`` names the
revision a database is at. To write a new revision, against a database already at head::

    python -c "from alembic import command; from authz.migrate import config; \\
        command.revision(config('sqlite:///var/authz.sqlite3'), 'what changes', \\
                         autogenerate=True, rev_id='0002')"

then read and correct the generated file in ``authz/migrations/versions``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).with_name("migrations")

# The first revision, and the tables it creates.
BASELINE = "0001"
BASELINE_TABLES = frozenset({
    "companies", "users", "company_admins", "firms", "collaborators",
    "delegations", "grants", "api_keys", "audit_log", "policy_events",
})

# Serialises concurrent upgrades on PostgreSQL (e.g. several instances starting at once).
_PG_LOCK_KEY = 0x617574687A  # "authz"


def config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic configuration for this package's migrations, on ``connection`` or ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        # configparser interpolation: a % in a password must be doubled
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision shipped with this package."""
    found = ScriptDirectory.from_config(config()).get_current_head()
    assert found is not None, "the package ships at least one revision"
    return found


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest revision, in one transaction (idempotent)."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            cfg = config(connection=conn)
            if _made_before_migrations(conn):
                # The first releases created the schema directly with metadata.create_all
                # and kept no alembic_version table. Their tables are revision 0001's, so
                # record the database at 0001 instead of creating them again: 0001 runs in
                # "adopt" mode and creates only the tables that are missing (none, unless
                # the database predates a table added before migrations existed, such as
                # policy_events), then Alembic stamps it, keeping every row.
                cfg.attributes["adopt_existing"] = True
                command.upgrade(cfg, BASELINE)
                cfg.attributes["adopt_existing"] = False
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at; None if it has never been migrated."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _made_before_migrations(conn: Connection) -> bool:
    tables = set(inspect(conn).get_table_names())
    return "alembic_version" not in tables and bool(tables & BASELINE_TABLES)


def engine_for(url: str) -> Engine:
    """An engine for migrating: one connection, and DDL inside the transaction on SQLite too."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, poolclass=NullPool)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, poolclass=NullPool, connect_args={"timeout": 30})

    # pysqlite runs DDL outside any transaction; emit BEGIN ourselves so a failed upgrade
    # leaves nothing half done. IMMEDIATE: a second upgrader waits for the first to finish.
    # Foreign keys stay off (SQLite's default): batch migrations copy and drop tables.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
