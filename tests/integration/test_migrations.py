"""Schema migrations (Alembic, ``authz.migrate``) on SQLite and on PostgreSQL.

Each test gets its own empty database: a SQLite file, or a throw-away PostgreSQL
database created on the server named by AUTHZ_TEST_POSTGRES_URL and dropped after.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import UniqueConstraint, create_engine, insert, inspect, select

from authz import migrate
from authz.store import Database
from authz.tables import audit_log, metadata, policy_events
from tests.support import CABINET, DUPONT, MANAGER, throwaway_postgres

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """The URL of a new, empty database: SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'authz.sqlite3'}"
        return
    # The session fixture skips, with its reason, when AUTHZ_TEST_POSTGRES_URL is unset
    # or the server is unreachable; it is only used here to reach the server.
    with throwaway_postgres(request.getfixturevalue("postgres_url"), "authz_migrations") as url:
        yield url


# ---- helpers ---------------------------------------------------------------------------------


def _schema_diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


def _where(predicate) -> str | None:
    """A partial index's predicate without the casts and parentheses PostgreSQL adds."""
    return None if predicate is None else re.sub(r"::\w+|[()\s]", "", str(predicate))


def _model_indexes(dialect: str) -> dict[str, dict[str, tuple]]:
    """Per table: index name -> (columns, unique, predicate), as the models declare them."""
    return {
        table.name: {
            index.name: (
                tuple(column.name for column in index.columns),
                bool(index.unique),
                _where(index.dialect_options[dialect]["where"]),
            )
            for index in table.indexes
        }
        for table in metadata.sorted_tables
    }


def _model_uniques() -> dict[str, set[tuple[str, ...]]]:
    """Per table: the column tuples of its UNIQUE constraints."""
    return {
        table.name: {
            tuple(column.name for column in constraint.columns)
            for constraint in table.constraints
            if isinstance(constraint, UniqueConstraint)
        }
        for table in metadata.sorted_tables
    }


def _database_indexes(url: str) -> tuple[str, dict[str, dict[str, tuple]], dict[str, set[tuple[str, ...]]]]:
    """The dialect, then indexes and UNIQUE constraints as the database reports them."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            dialect = conn.dialect.name
            inspector = inspect(conn)
            indexes = {
                table.name: {
                    index["name"]: (
                        tuple(index["column_names"]),
                        bool(index["unique"]),
                        _where(index.get("dialect_options", {}).get(f"{dialect}_where")),
                    )
                    for index in inspector.get_indexes(table.name)
                    # PostgreSQL also lists the index behind each UNIQUE constraint
                    if not index.get("duplicates_constraint")
                }
                for table in metadata.sorted_tables
            }
            uniques = {
                table.name: {
                    tuple(constraint["column_names"]) for constraint in inspector.get_unique_constraints(table.name)
                }
                for table in metadata.sorted_tables
            }
            return dialect, indexes, uniques
    finally:
        engine.dispose()


def _add_rows(url: str) -> None:
    """A company, its admin, a firm with its manager, an active delegation, two audit records."""
    database = Database(url)
    try:
        with database.transaction() as tx:
            tx.insert_company(DUPONT, "Maçonnerie Dupont", NOW)
            tx.add_admin(DUPONT, "alice@dupont.example", NOW)
            tx.ensure_user(MANAGER, NOW)
            tx.insert_firm(CABINET, "Cabinet Legrand", MANAGER, NOW)
            tx.insert_delegation(
                id="d" * 24, company_siret=DUPONT, manager_email=MANAGER, firm_siret=CABINET,
                status="active", scope="compte declarations", token_hash=None, token_expires_at=None,
                ends_at=None, created_at=NOW, updated_at=NOW, activated_at=NOW, revoked_at=None,
            )
            for action in ("delegation.created", "delegation.activated"):
                # A plain insert, as a writer of revision 0001 did (it had no data version).
                tx.conn.execute(insert(audit_log).values(
                    at=NOW, actor="alice@dupont.example", action=action, company_siret=DUPONT,
                    firm_siret=CABINET, subject_email=MANAGER, target_id="d" * 24,
                    details={"scope": ["compte", "declarations"]}, request_id="req-1",
                ))
    finally:
        database.dispose()


def _snapshot(url: str) -> dict[str, list[tuple]]:
    """Every row of every table there is, in primary-key order."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            return {
                table.name: [tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key.columns))]
                for table in metadata.sorted_tables
                if table.name in present
            }
    finally:
        engine.dispose()


def _append_audit(url: str) -> list[int]:
    """Append one audit record without an id; return every audit id."""
    database = Database(url)
    try:
        with database.transaction() as tx:
            tx.append_audit(at=NOW, actor="ops", action="test", details={})
        with database.engine.connect() as conn:
            return list(conn.execute(select(audit_log.c.id).order_by(audit_log.c.id)).scalars())
    finally:
        database.dispose()


# ---- tests -----------------------------------------------------------------------------------


def test_migrating_an_empty_database_gives_exactly_the_models_schema(database_url):
    assert migrate.current(database_url) is None

    migrate.upgrade(database_url)

    assert migrate.current(database_url) == migrate.head()
    assert _schema_diff(database_url) == []
    dialect, indexes, uniques = _database_indexes(database_url)
    assert indexes == _model_indexes(dialect)
    assert uniques == _model_uniques()
    # the partial unique indexes really are partial, on both databases
    assert indexes["delegations"]["ux_delegations_active_pair"][2] == "status='active'"
    assert indexes["grants"]["ux_grants_active_triple"][2] == "status='active'"


def test_audit_ids_are_generated_by_the_database(database_url):
    migrate.upgrade(database_url)

    assert _append_audit(database_url) == [1]
    assert _append_audit(database_url) == [1, 2]


def test_upgrade_keeps_existing_data_and_can_run_again(database_url):
    command.upgrade(migrate.config(database_url), migrate.BASELINE)
    assert migrate.current(database_url) == migrate.BASELINE
    _add_rows(database_url)
    before = _snapshot(database_url)
    assert before["delegations"] and len(before["audit_log"]) == 2

    migrate.upgrade(database_url)
    migrate.upgrade(database_url)

    assert migrate.current(database_url) == migrate.head()
    after = _snapshot(database_url)
    assert {table: after[table] for table in before} == before
    assert after["data_version"] == [(1, 0)]  # added by 0002, starting at 0
    assert _append_audit(database_url) == [1, 2, 3]


def test_a_database_made_by_create_all_is_stamped_not_recreated(database_url):
    Database(database_url).create_schema()
    _add_rows(database_url)
    before = _snapshot(database_url)

    migrate.upgrade(database_url)

    assert migrate.current(database_url) == migrate.head()
    assert _snapshot(database_url) == before
    assert _schema_diff(database_url) == []
    migrate.upgrade(database_url)
    assert _snapshot(database_url) == before


def test_a_database_from_before_policy_events_gets_the_missing_table(database_url):
    # The first release's create_all had no policy_events table.
    database = Database(database_url)
    metadata.create_all(database.engine, tables=[t for t in metadata.sorted_tables if t is not policy_events])
    database.dispose()
    _add_rows(database_url)
    before = _snapshot(database_url)
    assert "policy_events" not in before

    migrate.upgrade(database_url)

    assert migrate.current(database_url) == migrate.head()
    assert _schema_diff(database_url) == []
    assert _snapshot(database_url) == {**before, "policy_events": []}


# ---- the console script ------------------------------------------------------------------------


def _authz() -> list[str]:
    script = Path(sys.executable).parent / "authz"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from service.cli import main; main()"]


def test_authz_db_upgrade_on_a_fresh_sqlite_file_can_run_twice(tmp_path):
    path = tmp_path / "var" / "authz.sqlite3"
    env = {name: value for name, value in os.environ.items() if not name.startswith("AUTHZ_")}
    env["AUTHZ_DATABASE_URL"] = f"sqlite:///{path}"

    for _ in range(2):
        done = subprocess.run(
            [*_authz(), "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "schema up to date" in done.stdout

    assert migrate.current(f"sqlite:///{path}") == migrate.head()
    assert _schema_diff(f"sqlite:///{path}") == []
