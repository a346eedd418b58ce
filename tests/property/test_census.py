"""Property test: a census refreshed from the audit log equals one built from scratch.

The impact census (``authz.census``) keeps every pair's shape between reports and
recomputes only the companies that the audit records since, or an end date passed
meanwhile, may have changed. The random delegation graphs of
``test_against_reference`` (every use case, with the clock moving onto end dates and
link expiries) drive the store; after every step, the census kept since the first
step is refreshed and compared, pair by pair and shape by shape, with a census built
from the whole store at the same instant. The reference checks of that test stay on
in the rules; its decision invariants are left out here, as they cost most of its time.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.stateful import invariant, run_state_machine_as_test

from authz import census
from authz.store import Database
from tests.property.test_against_reference import SETTINGS, DelegationGraph, emptied, sqlite_database


class CensusFollowsTheStore(DelegationGraph):
    """The reference test's random changes, with the census checked after each step."""

    def __init__(self, open_database):
        super().__init__(open_database)
        self.folder = Path(tempfile.mkdtemp(prefix="authz-census-"))
        self.checks = self.refreshes = 0

    # The reference test's decision checks: not this test's subject.
    def decisions_follow_the_reference(self):
        pass

    def check_attenuation_on_service_answers(self, actions=None):
        pass

    @invariant()
    def refreshed_census_equals_a_fresh_one(self):
        now = self.clock().timestamp()
        kept, how = census.current(self.db, now, self.folder)
        with self.db.transaction(write=False) as tx:
            identity = census._identity(self.db, tx)
        fresh = census.build(self.db, identity, now)

        assert _pairs(kept) == _pairs(fresh)
        self.checks += 1
        if how == "census refreshed":
            self.refreshes += 1

    def teardown(self):
        try:
            # Every check after the first refreshed the census: none fell back to a rebuild.
            assert self.refreshes == max(self.checks - 1, 0)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._close()


def _pairs(taken: census.Census) -> dict:
    return {
        siret: [(email, taken.shapes[number]) for email, number in zip(emails, numbers, strict=True)]
        for siret, emails, numbers in taken.companies()
    }


def test_a_refreshed_census_equals_a_fresh_one_on_sqlite():
    run_state_machine_as_test(lambda: CensusFollowsTheStore(sqlite_database), settings=SETTINGS)


@pytest.mark.postgres
def test_a_refreshed_census_equals_a_fresh_one_on_postgres(postgres_url):
    database = Database(postgres_url)
    try:
        run_state_machine_as_test(
            lambda: CensusFollowsTheStore(emptied(database)), settings=settings(SETTINGS, max_examples=10)
        )
    finally:
        database.dispose()
