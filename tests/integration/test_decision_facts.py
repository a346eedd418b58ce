"""The facts a decision reads (``Tx.decision_facts``), in one statement for many pairs.

Whatever the pairs it is read with (one, or up to a dozen, so that the key lists cross
from ``IN (...)`` to the array or JSON form), a pair's facts are the ones it has read
alone, and those are the facts as each part is defined elsewhere in the store: the
user's roles (``users_facts``), the company's links that reach that user
(``companies_facts`` then ``reaching``, what impact reports rely on), whether the
company is registered, and its pending designations to that e-mail. Read as a search's
(one user's companies read from links), the facts are the same. On the
generated ``small`` dataset, in SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from authz import migrate, model
from authz.dataset import load_dataset
from authz.store import _ARRAYS, _IN_LISTS, _JSON, Database, delegation_fact, reaching
from authz.tables import company_admins, delegations, firms, grants
from tests.conftest import POSTGRES_URL
from tests.support import siret, small_store, throwaway_postgres

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
UNKNOWN_EMAIL = "nobody@unknown.example"
UNREGISTERED = siret(9_9999_9999_0001)
PER_KIND = 12


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path_factory):
    if request.param == "sqlite":
        database, _ = small_store(tmp_path_factory.mktemp("facts"), seed=5, now=NOW)
        yield database
        database.dispose()
        return
    request.getfixturevalue("postgres_url")  # skips, or fails when PostgreSQL is required
    with throwaway_postgres(POSTGRES_URL, "authz_facts") as url:
        migrate.upgrade(url)
        database = Database(url)
        load_dataset(database, "small", seed=5, now=NOW)
        yield database
        database.dispose()


@pytest.fixture(scope="module")
def pairs(store):
    """Pairs of every kind a decision meets: a pending designation, a grant, an admin, a
    firm's manager and client; and their e-mails and SIRETs, with unknown ones, to mix."""
    linked = [
        select(delegations.c.manager_email, delegations.c.company_siret).where(delegations.c.status == "pending"),
        select(grants.c.collaborator_email, grants.c.company_siret),
        select(company_admins.c.user_email, company_admins.c.company_siret),
        select(firms.c.manager_email, delegations.c.company_siret).join(firms, firms.c.siret == delegations.c.firm_siret),
    ]
    with store.reading() as tx:
        found = [tuple(row) for query in linked for row in tx.conn.execute(query.limit(PER_KIND))]
    assert len(found) == 4 * PER_KIND  # the dataset has enough of each kind
    emails = sorted({email for email, _ in found} | {UNKNOWN_EMAIL})
    sirets = sorted({company for _, company in found} | {UNREGISTERED})
    return found, emails, sirets


def _comparable(facts):
    user, company, registered, pending = facts
    return user, company.siret, frozenset(company.delegations), frozenset(company.grants), registered, pending


def _by_definition(tx, email: str, siret_: str, now: float):
    user = tx.users_facts([email], now)[email]
    links = tx.companies_facts([siret_], firms=user.manages | user.collaborates, collaborators=[email])[siret_]
    pending = sorted((delegation_fact(row) for row in tx.pending_delegations_for(siret_, email)), key=lambda d: d.id)
    return user, reaching(links, user), tx.company_exists(siret_), tuple(pending)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_pairs_facts_read_with_others_are_those_read_alone_and_those_defined(store, pairs, data):
    found, emails, sirets = pairs
    pair = st.one_of(st.sampled_from(found), st.tuples(st.sampled_from(emails), st.sampled_from(sirets)))
    asked = data.draw(st.lists(pair, min_size=1, max_size=12))
    now = NOW.timestamp()
    with store.reading() as tx:
        together = tx.decision_facts(asked, now)
        for email, siret_ in asked:
            alone = tx.decision_facts([(email, siret_)], now).of(email, siret_)
            assert _comparable(together.of(email, siret_)) == _comparable(alone)
            assert _comparable(alone) == _comparable(_by_definition(tx, email, siret_, now))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_searchs_facts_are_the_facts_of_its_candidates(store, pairs, data):
    """A search reads its candidates' facts without the registration arm and on another
    plan: for one user and SIRETs read from link rows, as a search's are, nothing differs."""
    found, emails, _ = pairs
    linked_sirets = sorted({company for _, company in found})
    pair = st.one_of(st.sampled_from(found), st.tuples(st.sampled_from(emails), st.sampled_from(linked_sirets)))
    asked = data.draw(st.lists(pair, min_size=1, max_size=12))
    now = NOW.timestamp()
    with store.reading() as tx:
        read_for_search = tx.decision_facts(asked, now, search=True)
        read_whole = tx.decision_facts(asked, now)
    for email, siret_ in asked:
        assert _comparable(read_for_search.of(email, siret_)) == _comparable(read_whole.of(email, siret_))


def test_the_pending_designations_and_registration_are_read(store, pairs):
    """The property above would hold if neither were read at all: check that they are."""
    found, _, _ = pairs
    pending_pair = found[0]
    with store.reading() as tx:
        facts = tx.decision_facts([pending_pair, (UNKNOWN_EMAIL, UNREGISTERED)], NOW.timestamp())
    assert facts.of(*pending_pair)[3]  # a pending designation to that e-mail
    assert facts.of(*pending_pair)[2] is True
    assert facts.of(UNKNOWN_EMAIL, UNREGISTERED)[2:] == (False, ())


@pytest.mark.parametrize("name", ["decision_facts", "search_facts"])
def test_the_pending_status_is_written_into_the_facts_statements(store, name):
    """The pending arm reads a partial index (``status = 'pending'``). With the status bound
    as a parameter, SQLite prepared the whole statement again at every run to know whether
    that index applied: a miss's facts took three times as long (see ``_status_is``)."""
    dialect = store.reader.dialect
    for form in (_IN_LISTS, _JSON if dialect.name == "sqlite" else _ARRAYS):  # as ``Tx._batch`` picks
        compiled = getattr(form, name).compile(dialect=dialect)
        assert "delegations.status = 'pending'" in str(compiled), form.form
        assert not any(isinstance(value, model.LinkStatus) for value in compiled.params.values()), form.form
