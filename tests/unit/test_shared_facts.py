"""The facts file a server's workers share: what it hands back, and that a broken file is a miss."""

from __future__ import annotations

import logging
import multiprocessing

import pytest

from authz import model
from authz.shared_facts import SharedFacts

ANA, BEN = "ana@example.org", "ben@example.org"
COMPANY = "10000000000016"


def facts(email: str = ANA) -> tuple:
    """Facts with every field of every type set, each to a value of its own."""
    delegation = model.Delegation("d1", COMPANY, "max@firm.example", "20000000000015", "active",
                                  frozenset({"declarations", "compte"}), 2_000_000_000.0)
    grant = model.Grant("g1", "20000000000015", email, COMPANY, "active", frozenset({"declarations"}), None)
    pending = model.Delegation("d2", COMPANY, email, None, "pending", frozenset({"compte"}), 1_900_000_000.5)
    user = model.User(email, 5.0, admin_of=frozenset({"30000000000014"}), manages=frozenset({"40000000000013"}),
                      collaborates=frozenset({"20000000000015"}))
    return user, model.Company(COMPANY, delegations=(delegation,), grants=(grant,)), True, (pending,)


@pytest.fixture
def shared(tmp_path) -> SharedFacts:
    return SharedFacts(tmp_path / "facts.sqlite3")


def test_facts_put_are_handed_back_with_their_version_until_their_horizon(shared):
    assert shared.get(ANA, COMPANY, now=10.0) is None
    shared.put(ANA, COMPANY, version=7, valid_until=100.0, facts=facts())
    assert shared.get(ANA, COMPANY, now=10.0) == (7, 100.0, facts())
    assert shared.get(ANA, COMPANY, now=100.0) is None
    assert shared.get(BEN, COMPANY, now=10.0) is None
    shared.put(ANA, COMPANY, version=9, valid_until=200.0, facts=facts())
    assert shared.get(ANA, COMPANY, now=10.0)[0] == 9  # the later read replaces the earlier


def test_a_pair_that_lands_in_a_taken_slot_replaces_the_other_never_answers_for_it(tmp_path):
    shared = SharedFacts(tmp_path / "facts.sqlite3", slots=1)
    shared.put(ANA, COMPANY, 1, 100.0, facts(ANA))
    shared.put(BEN, COMPANY, 1, 100.0, facts(BEN))
    assert shared.get(ANA, COMPANY, now=0.0) is None
    assert shared.get(BEN, COMPANY, now=0.0) == (1, 100.0, facts(BEN))


def test_a_pair_kept_in_its_second_row_is_replaced_there_never_copied(shared):
    first, second = shared._slots(ANA, COMPANY)
    assert first != second
    shared.put(ANA, COMPANY, 1, 100.0, facts())
    shared._connection().execute("UPDATE facts SET slot = ? WHERE slot = ?", (second, first))  # its first row is free
    shared.put(ANA, COMPANY, 2, 100.0, facts())
    rows = shared._connection().execute("SELECT slot, version FROM facts WHERE email = ?", (ANA,)).fetchall()
    assert rows == [(second, 2)]
    assert shared.get(ANA, COMPANY, now=0.0)[0] == 2


def _put_in_another_process(path: str) -> None:
    SharedFacts(path).put(BEN, COMPANY, 3, 100.0, facts(BEN))


def test_facts_put_by_another_process_are_found_here(shared):
    shared.put(ANA, COMPANY, 2, 100.0, facts())  # this process's connection exists before the fork
    child = multiprocessing.get_context("fork").Process(target=_put_in_another_process, args=(shared.path,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert shared.get(BEN, COMPANY, now=0.0) == (3, 100.0, facts(BEN))
    assert shared.get(ANA, COMPANY, now=0.0) == (2, 100.0, facts())


def test_a_file_that_is_not_a_database_is_a_miss_logged_once(tmp_path, caplog):
    path = tmp_path / "facts.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    shared = SharedFacts(path)
    with caplog.at_level(logging.WARNING, logger="authz.shared_facts"):
        shared.put(ANA, COMPANY, 1, 100.0, facts())
        assert shared.get(ANA, COMPANY, now=0.0) is None
        assert shared.get(ANA, COMPANY, now=0.0) is None
    warnings = [r for r in caplog.records if r.name == "authz.shared_facts"]
    assert len(warnings) == 1 and "the database answers instead" in warnings[0].getMessage()


def test_a_folder_that_is_gone_is_a_miss(tmp_path):
    shared = SharedFacts(tmp_path / "gone" / "facts.sqlite3")
    shared.put(ANA, COMPANY, 1, 100.0, facts())
    assert shared.get(ANA, COMPANY, now=0.0) is None


def test_a_row_that_cannot_be_read_back_is_a_miss_and_the_next_put_mends_it(shared):
    shared.put(ANA, COMPANY, 1, 100.0, facts())
    connection = shared._connection()
    connection.execute("UPDATE facts SET facts = x'00'")
    assert shared.get(ANA, COMPANY, now=0.0) is None
    shared.put(ANA, COMPANY, 2, 100.0, facts())
    assert shared.get(ANA, COMPANY, now=0.0) == (2, 100.0, facts())
