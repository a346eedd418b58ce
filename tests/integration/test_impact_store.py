"""Impact over a generated store (the `small` dataset): the bulk loading gives every pair
the facts a decision loads, shares and processes change nothing, and the report equals
the pair-by-pair comparison."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

import pytest

from authz import impact, pairs
from authz.engine import Engine, read_policy
from authz.store import reaching
from tests.support import ROOT, small_store

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    database, _ = small_store(tmp_path_factory.mktemp("impact"), seed=11, now=NOW)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def shipped() -> Engine:
    return Engine(ROOT)


@pytest.fixture(scope="module")
def narrower() -> Engine:
    """A draft that stops delegating `compte`: managers and collaborators lose it."""
    sources = read_policy(ROOT)
    sources["policies.polar"] = sources["policies.polar"].replace('delegable("compte");\n', "")
    return Engine(sources)


def test_the_whole_store_read_at_once_gives_each_pair_the_facts_of_a_single_decision(db):
    with db.transaction(write=False) as tx:
        whole = pairs.load_all(tx, NOW.timestamp())
        one_by_one = pairs.load_some(tx, tx.linked_companies(), NOW.timestamp())

    assert whole.people == one_by_one.people
    assert whole.size == one_by_one.size > 4000
    for siret, emails in whole.people.items():
        for email in emails:
            assert whole.users[email] == one_by_one.users[email]
            mine = reaching(whole.companies[siret], whole.users[email])
            theirs = reaching(one_by_one.companies[siret], one_by_one.users[email])
            assert (mine.siret, set(mine.delegations), set(mine.grants)) == (
                theirs.siret, set(theirs.delegations), set(theirs.grants))


def test_shares_of_the_store_put_end_to_end_are_the_whole_store(db):
    with db.transaction(write=False) as tx:
        bounds = pairs.shares(tx, 3)
        whole = pairs.load_all(tx, NOW.timestamp())
        parts = [pairs.load_all(tx, NOW.timestamp(), first, until) for first, until in pairwise(bounds)]

    assert len(bounds) == 4
    assert [siret for part in parts for siret in sorted(part.people)] == sorted(whole.people)
    for part in parts:
        for siret, company in part.companies.items():
            # the same links; a store returns them in any order
            assert set(company.delegations) == set(whole.companies[siret].delegations)
            assert set(company.grants) == set(whole.companies[siret].grants)


def test_a_report_shared_between_two_processes_equals_a_report_in_one(db, shipped, narrower):
    alone = impact.measure(db, shipped, narrower, NOW.timestamp(), workers=1)
    shared = impact.measure(db, shipped, narrower, NOW.timestamp(), workers=2)

    assert alone.lost and not alone.gained
    assert (shared.gained, shared.lost, shared.pairs_checked, shared.shapes) == (
        alone.gained, alone.lost, alone.pairs_checked, alone.shapes)


def test_a_report_from_the_census_equals_a_report_reading_the_whole_store(db, shipped, narrower, census_folder):
    whole = impact.measure(db, shipped, narrower, NOW.timestamp())
    built = impact.measure(db, shipped, narrower, NOW.timestamp(), census_folder=census_folder)
    refreshed = impact.measure(db, shipped, narrower, NOW.timestamp() + 60, census_folder=census_folder)

    assert "census" not in whole.method
    assert built.method.endswith("census built from the whole store")
    assert "census refreshed" in refreshed.method and "the running policy's answers recalled" in refreshed.method
    for report in (built, refreshed):
        assert (report.gained, report.lost, report.pairs_checked, report.shapes) == (
            whole.gained, whole.lost, whole.pairs_checked, whole.shapes)
    # The running policy's answers are asked once: the second report asks only the draft.
    assert built.questions == whole.questions
    assert 0 < refreshed.questions < whole.questions


def test_the_report_equals_the_pair_by_pair_comparison_on_generated_data(db, shipped, narrower):
    with db.transaction(write=False) as tx:
        population = pairs.load_some(tx, tx.linked_companies()[:30], NOW.timestamp())

    found = impact.compare(shipped, narrower, population)

    lost = []
    for siret in sorted(population.people):
        for email in population.people[siret]:
            user = population.users[email]
            facts = reaching(population.companies[siret], user)
            held = {r for r in shipped.rights if shipped.allows(user, r, facts)}
            still = {r for r in narrower.rights if narrower.allows(user, r, facts)}
            lost += [(email, r, siret) for r in sorted(held - still)]
    assert [(c.user, c.right, c.company) for c in found.lost] == lost and lost
    assert found.questions < found.pairs_checked * 15 / 5  # the naive comparison asks 15 per pair
