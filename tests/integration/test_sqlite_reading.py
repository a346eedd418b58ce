"""``Database.reading`` on SQLite: the statements run through SQLAlchemy share one read
transaction, so a search sees one snapshot; a decision's facts, one statement on the
driver's cursor, begin none (BEGIN and COMMIT were about 9% of a cache miss's cost)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from authz.store import Database

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def database(tmp_path):
    found = Database(f"sqlite:///{tmp_path / 'authz.sqlite3'}")
    found.create_schema()
    yield found
    found.dispose()


def _statements(database: Database) -> list[str]:
    """The statements sent through SQLAlchemy from now on (BEGIN included)."""
    sent: list[str] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: sent.append(statement.split()[0].upper()))
    return sent


def test_a_decisions_facts_are_read_without_a_transaction(database):
    sent = _statements(database)
    with database.reading() as tx:
        facts = tx.decision_facts([("someone@example.com", "73282932000074")], NOW.timestamp())
    assert facts.of("someone@example.com", "73282932000074")[2] is False  # read: not registered
    assert "BEGIN" not in sent


def test_reads_through_sqlalchemy_share_one_snapshot_until_the_block_ends(database, tmp_path):
    other = Database(f"sqlite:///{tmp_path / 'authz.sqlite3'}")
    try:
        with database.reading() as tx:
            assert not tx.company_exists("73282932000074")
            with other.transaction() as writer:
                writer.insert_company("73282932000074", "Dupont", NOW)
            assert not tx.company_exists("73282932000074")  # the snapshot of the first read
            facts = tx.decision_facts([("a@example.com", "73282932000074")], NOW.timestamp())
            assert facts.of("a@example.com", "73282932000074")[2] is False  # the same snapshot
        with database.reading() as tx:
            assert tx.company_exists("73282932000074")
    finally:
        other.dispose()


def test_a_decisions_facts_are_read_on_the_processs_own_connections_from_any_thread(database):
    sent = _statements(database)
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda n: database.decision_facts([(f"user{n}@example.com", "73282932000074")],
                                                                NOW.timestamp()).users, range(100)))
    assert [set(users) for users in found] == [{f"user{n}@example.com"} for n in range(100)]
    assert sent == []  # none through SQLAlchemy: no BEGIN, no pool
