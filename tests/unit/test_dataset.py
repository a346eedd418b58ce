"""The synthetic dataset (authz/dataset.py): its shape at the `small` size, in a temporary SQLite."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from authz import dataset
from authz.dataset import DELEGABLE, SIZES, Generator, load_dataset
from authz.decisions import Decisions
from authz.engine import LoadedPolicy
from authz.identifiers import is_email, is_siret
from authz.tables import collaborators, companies, company_admins, delegations, firms, grants, users
from tests.support import ROOT, small_store

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    db, summary = small_store(tmp_path_factory.mktemp("dataset"), seed=7, now=NOW)
    with db.engine.connect() as conn:
        rows = {
            table.name: list(conn.execute(select(table)))
            for table in (companies, users, company_admins, firms, collaborators, delegations, grants)
        }
    yield db, summary, rows
    db.dispose()


def test_counts_are_those_of_the_small_size(loaded):
    _, summary, rows = loaded
    size = SIZES["small"]
    assert summary.counts == {name: len(found) for name, found in rows.items()}
    assert len(rows["companies"]) == size.companies
    assert len(rows["firms"]) == size.firms
    assert abs(len(rows["collaborators"]) - size.collaborators) <= size.collaborators * 0.05
    assert abs(len(rows["grants"]) - size.grants) <= size.grants * 0.02


def test_every_company_has_one_or_two_admins_and_every_siret_and_email_is_valid(loaded):
    _, _, rows = loaded
    admins = Counter(row.company_siret for row in rows["company_admins"])
    assert set(admins) == {row.siret for row in rows["companies"]}
    assert set(admins.values()) == {1, 2}
    sirets = [row.siret for row in rows["companies"]] + [row.siret for row in rows["firms"]]
    assert len(set(sirets)) == len(sirets)
    assert all(is_siret(siret) for siret in sirets)
    emails = [row.email for row in rows["users"]] + [row.manager_email for row in rows["delegations"]]
    assert all(is_email(email) and email == email.lower() for email in emails)


def test_portfolios_have_a_long_tail(loaded):
    _, _, rows = loaded
    clients = Counter(row.firm_siret for row in rows["delegations"] if row.status == "active")
    counts = sorted(clients.values())
    assert 10 <= statistics.median(counts) <= 20
    assert counts[-1] >= 5 * statistics.median(counts)


def test_links_mix_pending_revoked_and_lapsed_states(loaded):
    _, _, rows = loaded
    status = Counter(row.status for row in rows["delegations"])
    assert status["active"] > status["revoked"] > 0 and status["pending"] > 0
    pending = [row for row in rows["delegations"] if row.status == "pending"]
    assert all(row.firm_siret is None and row.token_hash and row.token_expires_at for row in pending)
    assert any(row.token_expires_at > NOW for row in pending)
    assert any(row.token_expires_at <= NOW for row in pending)
    assert any(row.status == "active" and row.ends_at and row.ends_at <= NOW for row in rows["delegations"])
    assert all(row.revoked_at for row in rows["delegations"] if row.status == "revoked")
    hashes = [row.token_hash for row in rows["delegations"]]
    assert len(set(hashes)) == len(hashes)
    grant_status = Counter(row.status for row in rows["grants"])
    assert grant_status["active"] > grant_status["revoked"] > 0
    assert any(row.status == "active" and row.ends_at and row.ends_at <= NOW for row in rows["grants"])
    # at most one active delegation per company-firm pair, one active grant per triple
    pairs = Counter((row.company_siret, row.firm_siret) for row in rows["delegations"] if row.status == "active")
    assert max(pairs.values()) == 1
    triples = Counter(
        (r.firm_siret, r.collaborator_email, r.company_siret) for r in rows["grants"] if r.status == "active"
    )
    assert max(triples.values()) == 1


def test_grants_stay_within_the_firm_and_mostly_within_its_delegation(loaded):
    _, _, rows = loaded
    staff = {(row.firm_siret, row.user_email) for row in rows["collaborators"]}
    scopes = defaultdict(set)
    for row in rows["delegations"]:
        assert row.scope and "entreprise" not in row.scope.split()
        assert set(row.scope.split()) <= set(DELEGABLE)
        if row.firm_siret:
            scopes[(row.company_siret, row.firm_siret)] |= set(row.scope.split())
    exceeding = 0
    for row in rows["grants"]:
        assert (row.firm_siret, row.collaborator_email) in staff
        delegated = scopes[(row.company_siret, row.firm_siret)]
        assert delegated, "a grant on a company the firm never had a delegation from"
        granted = set(row.scope.split())
        assert granted and granted <= set(DELEGABLE)
        exceeding += not granted <= delegated
    assert 0 < exceeding < len(rows["grants"]) * 0.15


def test_the_service_reads_the_rows_back(loaded):
    db, _, rows = loaded
    decisions = Decisions(db, LoadedPolicy(ROOT))
    admin = rows["company_admins"][0]
    assert decisions.decide(admin.user_email, "entreprise", admin.company_siret).allowed
    assert not decisions.decide("nobody@nowhere.example", "compte", admin.company_siret).allowed
    with db.transaction(write=False) as tx:
        row = tx.delegations_of_company(rows["delegations"][0].company_siret)[0]
    assert row.created_at.tzinfo is not None and row.created_at < NOW


def test_same_seed_same_data_and_a_loaded_database_is_refused(loaded):
    db, _, _ = loaded
    first, second = Generator("small", 7, NOW), Generator("small", 7, NOW)
    assert list(first.grant_rows()) == list(second.grant_rows())
    assert list(first.delegation_rows()) == list(second.delegation_rows())
    assert list(Generator("small", 8, NOW).company_rows()) != list(first.company_rows())
    with pytest.raises(ValueError, match="already holds"):
        load_dataset(db, "small", seed=7, now=NOW)
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(companies)).scalar() == SIZES["small"].companies
    with pytest.raises(ValueError, match="unknown dataset size"):
        dataset.Generator("huge")
