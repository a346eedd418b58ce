"""The data version is leased (``authz.store.VERSION_LEASE_SECONDS``): a process reads it
at most once per lease, and a write that bumped it returns only once every lease taken
before its commit is over. Two ``Database`` objects on one database stand for two
processes: neither sees the other's lease, as two workers on two hosts would not.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz import store
from authz.errors import StoreUnavailable
from authz.store import Database


@pytest.fixture
def processes(db):
    """The ``db`` fixture's database, and another process's view of the same database."""
    other = Database(db.engine.url.render_as_string(hide_password=False))
    yield db, other
    other.dispose()


def _bump(database: Database) -> None:
    with database.transaction() as tx:
        tx.bump_data_version()


def test_a_write_returns_only_after_a_lease_taken_just_before_its_commit_is_over(processes):
    writer, reader = processes
    reader.data_version()
    reader.forget_data_version()  # its connection is made: the next lease starts when its read does
    with writer.transaction() as tx:
        tx.bump_data_version()
        before = reader.data_version()  # the old version: the reader's lease starts just before the commit

    assert reader.data_version() == before + 1


def test_a_process_reads_the_version_once_per_lease(processes, monkeypatch):
    database, _ = processes
    reads = []
    read = database._read_version
    monkeypatch.setattr(database, "_read_version", lambda: reads.append(1) or read())
    sent = 1000.0
    clock = [sent]
    monkeypatch.setattr(store, "lease_clock", lambda: clock[0])

    first = database.data_version()
    clock[0] = sent + store.VERSION_LEASE_SECONDS / 2
    assert database.data_version() == first
    assert len(reads) == 1
    clock[0] = sent + store.VERSION_LEASE_SECONDS + 1e-6  # the lease began when the read was sent: over
    database.data_version()
    assert len(reads) == 2


def test_a_failed_read_leaves_no_lease(processes, monkeypatch):
    database, _ = processes

    def unavailable():
        raise StoreUnavailable("the database is unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(database, "_read_version", unavailable)
        with pytest.raises(StoreUnavailable):
            database.data_version()
        with pytest.raises(StoreUnavailable):
            database.data_version()  # asked again at once: still no version from nowhere
    assert database.data_version() is not None


# Steps: (process, "read" or "write"); both processes keep reading between writes.
STEPS = st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["read", "write"])), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_every_read_after_a_write_returned_sees_it_in_every_process(processes, steps):
    """Whatever the order of reads (leases taken) and writes in two processes, a read
    made after a write returned answers that write's version (nothing else writes)."""
    written = processes[0].data_version()
    for who, step in steps:
        if step == "write":
            _bump(processes[who])
            written += 1
        else:
            assert processes[who].data_version() == written
