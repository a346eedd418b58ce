"""PostgreSQL connections that die while pooled: a connection idle for a while is pinged
before use and replaced transparently; one used a moment ago is not pinged, so its
death fails one read (``StoreUnavailable``, never an answer), and the pool then drops
every connection made before, so the next read succeeds. The data version read that
every request makes, and the facts a decision reads, on connections of the process's
own, are made again once on a new connection when theirs died, and fail closed when no
connection can be made."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from sqlalchemy.exc import OperationalError

from authz import store
from authz.errors import StoreUnavailable
from authz.store import Database
from tests.support import throwaway_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def pooled(postgres_url, monkeypatch):
    # Every data version asked for is read (no lease): these tests are about that read.
    monkeypatch.setattr(store, "VERSION_LEASE_SECONDS", 0.0)
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


def _backends_whose_last_statement_has(admin: Database, text: str) -> set[int]:
    with admin.reading() as tx:
        rows = tx.conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND strpos(query, %(text)s) > 0", {"text": text}
        )
        return {row[0] for row in rows}


def _version_backends(admin: Database) -> set[int]:
    """The backends whose last statement was the data version read (its own connection)."""
    return _backends_whose_last_statement_has(admin, "FROM data_version")


def test_the_version_read_on_its_connection_killed_just_after_use_is_made_again_on_a_new_one(pooled):
    database, admin = pooled
    version = database.data_version()
    killed = _version_backends(admin)
    assert killed  # the version read's own connection is found
    for pid in killed:
        _terminate(admin, pid)

    assert database.data_version() == version  # read again, on a new connection
    assert _version_backends(admin) - killed


@contextmanager
def _own_connection_lost(database: Database, admin: Database, backends: set[int], monkeypatch):
    """The process's own connections on ``backends`` killed, and no new connection to be made
    until the block ends."""
    for pid in backends:
        _terminate(admin, pid)

    def unreachable():
        raise OperationalError("connect", {}, Exception("connection refused"))

    with monkeypatch.context() as patched:
        patched.setattr(database.reader, "raw_connection", unreachable)
        yield


def test_the_version_read_fails_closed_when_no_new_connection_can_be_made(pooled, monkeypatch):
    database, admin = pooled
    version = database.data_version()
    killed = _version_backends(admin)
    assert killed
    with _own_connection_lost(database, admin, killed, monkeypatch):
        with pytest.raises(StoreUnavailable):
            database.data_version()  # never a version read from nowhere: the request fails closed
        with pytest.raises(StoreUnavailable):
            database.data_version()
    assert database.data_version() == version


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


def test_the_version_read_fails_closed_when_a_new_connection_cannot_read_it(postgres_url):
    """A database without the version's table: the read fails on the connection just made."""
    with throwaway_postgres(postgres_url, "authz_noversion") as url:
        database = Database(url)
        try:
            with pytest.raises(StoreUnavailable):
                database.data_version()
        finally:
            database.dispose()


# ---- a decision's facts, read on the process's own connections (``OwnConnections``) ----------

PAIR = ("ana@example.org", "10000000000016")


def _facts_backends(admin: Database) -> set[int]:
    """The backends whose last statement was a decision's facts."""
    return _backends_whose_last_statement_has(admin, "AS kind")


def test_a_decisions_facts_read_on_its_connection_killed_just_after_use_is_made_again_on_a_new_one(pooled):
    database, admin = pooled
    assert database.decision_facts([PAIR], 0.0).registered == frozenset()
    killed = _facts_backends(admin)
    assert killed  # the facts were read on a connection of the process's own
    for pid in killed:
        _terminate(admin, pid)

    assert database.decision_facts([PAIR], 0.0).registered == frozenset()  # no failed read
    assert _facts_backends(admin) - killed


def test_a_decisions_facts_read_fails_closed_when_no_new_connection_can_be_made(pooled, monkeypatch):
    database, admin = pooled
    database.decision_facts([PAIR], 0.0)
    with _own_connection_lost(database, admin, _facts_backends(admin), monkeypatch), pytest.raises(StoreUnavailable):
        database.decision_facts([PAIR], 0.0)
    assert database.decision_facts([PAIR], 0.0).registered == frozenset()


def test_a_statement_that_fails_on_a_live_connection_fails_closed_without_a_second_try(pooled, monkeypatch):
    database, _ = pooled
    database.decision_facts([PAIR], 0.0)
    sent = []

    def failing(self, driver, **lists):
        sent.append(lists)
        driver.execute("SELECT 1 / 0")

    with monkeypatch.context() as patched:
        patched.setattr(store._DriverQuery, "fetch", failing)
        with pytest.raises(StoreUnavailable):
            database.decision_facts([PAIR], 0.0)
    assert len(sent) == 1  # not a lost connection: the same statement would fail again
    assert database.decision_facts([PAIR], 0.0).registered == frozenset()


def test_threads_read_facts_at_once_and_the_process_keeps_a_few_connections(pooled):
    database, _ = pooled
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda n: database.decision_facts([(f"user{n}@example.org", PAIR[1])], 0.0).users,
                              range(200)))
    assert [set(users) for users in found] == [{f"user{n}@example.org"} for n in range(200)]
    assert 1 <= len(database._own._free) <= 4


def _read_in_a_child(database: Database, queue) -> None:
    queue.put(sorted(database.decision_facts([PAIR], 0.0).users))


def test_a_forked_process_reads_facts_on_its_own_connections_and_leaves_its_parents_alone(pooled):
    database, _ = pooled
    database.decision_facts([PAIR], 0.0)  # the parent's connection, made before the fork
    ((_, connection),) = database._own._free
    backend = connection.info.backend_pid
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_a_child, args=(database, queue))
    child.start()
    assert queue.get(timeout=30) == [PAIR[0]]
    child.join(timeout=30)
    assert child.exitcode == 0
    assert database.decision_facts([PAIR], 0.0).registered == frozenset()
    assert [held.info.backend_pid for _, held in database._own._free] == [backend]  # the same, still serving
