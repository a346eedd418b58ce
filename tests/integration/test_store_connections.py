"""PostgreSQL connections that die while pooled: a connection idle for a while is pinged
before use and replaced transparently; one used a moment ago is not pinged, so its
death fails one read (``StoreUnavailable``, never an answer), and the pool then drops
every connection made before, so the next read succeeds. The data version read that
every request makes, which skips SQLAlchemy's Connection, fails closed and recovers too."""

from __future__ import annotations

import pytest

from authz import store
from authz.errors import StoreUnavailable
from authz.store import Database

pytestmark = pytest.mark.postgres


@pytest.fixture
def pooled(postgres_url):
    database = Database(postgres_url)
    admin = Database(postgres_url)
    yield database, admin
    database.dispose()
    admin.dispose()


def _backend(database: Database) -> int:
    with database.reading() as tx:
        return tx.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()


def _terminate(admin: Database, pid: int) -> None:
    with admin.reading() as tx:
        assert tx.conn.exec_driver_sql("SELECT pg_terminate_backend(%(pid)s)", {"pid": pid}).scalar()


def test_a_connection_killed_while_idle_is_replaced_without_a_failed_read(pooled, monkeypatch):
    database, admin = pooled
    monkeypatch.setattr(store, "PING_AFTER_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    killed = _backend(database)
    _terminate(admin, killed)

    assert _backend(database) != killed  # pinged, found dead, replaced: the read succeeded


def test_a_connection_killed_just_after_use_fails_one_read_then_the_pool_recovers(pooled, monkeypatch):
    database, admin = pooled
    monkeypatch.setattr(store, "PING_AFTER_IDLE_SECONDS", 3600.0)  # never pinged
    killed = _backend(database)
    _terminate(admin, killed)

    with pytest.raises(StoreUnavailable):
        _backend(database)
    assert _backend(database) != killed


def test_the_version_read_on_a_connection_killed_while_idle_is_replaced_without_a_failure(pooled, monkeypatch):
    database, admin = pooled
    monkeypatch.setattr(store, "PING_AFTER_IDLE_SECONDS", 0.0)
    version = database.data_version()
    _terminate(admin, _backend(database))  # the pool's one connection, which the version read uses

    assert database.data_version() == version


def test_the_version_read_on_a_connection_killed_just_after_use_fails_once_then_recovers(pooled, monkeypatch):
    database, admin = pooled
    monkeypatch.setattr(store, "PING_AFTER_IDLE_SECONDS", 3600.0)
    version = database.data_version()
    killed = _backend(database)
    _terminate(admin, killed)

    with pytest.raises(StoreUnavailable):
        database.data_version()  # never a version read from nowhere: the request fails closed
    assert database.data_version() == version
    assert _backend(database) != killed


def test_a_decisions_facts_read_on_a_connection_killed_just_after_use_fails_once_then_recovers(pooled, monkeypatch):
    """The read a decision makes when its answer is not cached runs on the driver's cursor."""
    database, admin = pooled
    monkeypatch.setattr(store, "PING_AFTER_IDLE_SECONDS", 3600.0)
    killed = _backend(database)
    _terminate(admin, killed)

    with pytest.raises(StoreUnavailable), database.reading() as tx:
        tx.decision_facts([("ana@example.org", "10000000000016")], 0.0)
    with database.reading() as tx:
        assert tx.decision_facts([("ana@example.org", "10000000000016")], 0.0).registered == frozenset()
    assert _backend(database) != killed
