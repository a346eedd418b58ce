"""Fixtures: a database per test on SQLite and on PostgreSQL, the engine, a clock.

PostgreSQL runs when AUTHZ_TEST_POSTGRES_URL names a server: one fresh database is
created for the session and dropped at the end; tables are emptied between tests.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from sqlalchemy.engine import make_url

from authz.audit import Context
from authz.decisions import Decisions
from authz.engine import Engine
from authz.store import Database
from authz.tables import data_version, metadata
from authz.usecases import Management
from tests.support import ROOT, Clock, throwaway_postgres

POSTGRES_URL = os.environ.get("AUTHZ_TEST_POSTGRES_URL")
POSTGRES_REQUIRED = os.environ.get("AUTHZ_TEST_POSTGRES_REQUIRED") == "1"


@pytest.fixture(autouse=True)
def census_folder(tmp_path, monkeypatch):
    """Each test keeps its own impact census: one outlives its report on purpose (authz.census)."""
    monkeypatch.setenv("AUTHZ_CACHE_DIR", str(tmp_path / "census"))
    return tmp_path / "census"


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(ROOT)


@pytest.fixture(scope="session")
def postgres_url():
    """Create a throw-away PostgreSQL database for this run; drop it afterwards."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need AUTHZ_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres)")
    databases = contextlib.ExitStack()
    try:
        url = databases.enter_context(throwaway_postgres(POSTGRES_URL, "authz_test"))
    except Exception as exc:
        if POSTGRES_REQUIRED:
            raise
        server = make_url(POSTGRES_URL).render_as_string(hide_password=True)
        pytest.skip(f"PostgreSQL at {server} is not reachable: {exc}")
    with databases:
        database = Database(url)
        database.create_schema()
        database.dispose()
        yield url


def _empty(database: Database) -> None:
    """Delete every row, then put back the data version row a fresh schema starts with."""
    with database.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        conn.execute(data_version.insert().values(id=1, version=0))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path) -> Database:
    """A fresh, empty database: SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'authz.sqlite3'}")
        database.create_schema()
        yield database
        database.dispose()
    else:
        database = Database(request.getfixturevalue("postgres_url"))
        _empty(database)
        yield database
        _empty(database)
        database.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def management(db, engine, clock) -> Management:
    return Management(db, lambda: engine, clock=clock)


@pytest.fixture
def decisions(db, engine, clock) -> Decisions:
    return Decisions(db, lambda: engine, clock=clock)


@pytest.fixture
def portal() -> Context:
    return Context(key="test-portal", request_id="req-portal")
