"""Fixtures for the end-to-end tests: empty databases the console script sets up itself.

Unlike the other suites, nothing here creates the schema: `authz db upgrade` must.
On PostgreSQL each use gets its own database, created next to the session's
``postgres_url`` one and dropped afterwards, so the schema really starts from nothing.
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import Cli, environment
from tests.support import throwaway_postgres


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def blank_database_url(request, tmp_path_factory):
    """An empty database without any table: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('e2e-sqlite') / 'authz.sqlite3'}"
    else:
        with throwaway_postgres(request.getfixturevalue("postgres_url"), "authz_e2e") as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLite file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'authz.sqlite3'}"


@pytest.fixture
def cli(tmp_path, sqlite_url) -> Cli:
    """`authz` on a fresh SQLite file, run from a directory outside the project."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    return Cli(environment(sqlite_url), workdir)
