"""A pool with no free connection: the caller waits ``pool_timeout``, then the request
fails closed with ``StoreUnavailable`` (503), never an unexpected error (500)."""

from __future__ import annotations

import pytest

from authz.errors import StoreUnavailable
from authz.store import Database


@pytest.fixture
def starved(db):
    """A second handle on the test database whose pools hold one connection, taken."""
    url = db.engine.url.render_as_string(hide_password=False)
    database = Database(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    held = [engine.connect() for engine in {database.engine, database.reader}]  # one engine on SQLite
    yield database
    for connection in held:
        connection.close()
    database.dispose()


def test_a_write_waits_then_fails_closed_when_no_connection_is_free(starved):
    with pytest.raises(StoreUnavailable), starved.transaction() as tx:
        tx.bump_data_version()


def test_a_read_waits_then_fails_closed_when_no_connection_is_free(starved):
    with pytest.raises(StoreUnavailable), starved.reading() as tx:
        tx.data_version()


def test_the_version_read_waits_then_fails_closed_when_no_connection_is_free(starved):
    with pytest.raises(StoreUnavailable):
        starved.data_version()
