"""The impact census on a real store: when it is refreshed, and when it is built again.

How a refreshed census compares with a fresh one after random changes is the property
test's subject (tests/property/test_census.py); here, the cases where refreshing
would be wrong and the census must be built again from the whole store, and the
files it keeps.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest

from authz import census
from authz.dataset import load_dataset
from authz.store import Database
from tests.conftest import _empty
from tests.support import as_user, siret

ADMIN = "alice@dupont.example"
MANAGER = "bruno@legrand.example"
COMPANY = siret(1_0000_0000_0100)
FIRM = siret(2_0000_0000_0100)
BUILT = "census built from the whole store"
REFRESHED = "census refreshed"


@pytest.fixture
def linked(management, portal, clock):
    """A company, its admin, and a firm holding an active delegation."""
    management.register_company(portal, COMPANY, "Dupont", ADMIN)
    designation = management.designate(as_user(ADMIN), COMPANY, MANAGER, ["compte"])
    management.activate(as_user(MANAGER), designation.activation.token, FIRM, "Legrand")


def _current(db: Database, clock, place: Path) -> tuple[dict, str]:
    taken = census.current(db, clock().timestamp(), place)
    assert taken is not None
    kept, how = taken
    return {siret: tuple(emails) for siret, emails, _ in kept.companies()}, how


def _only_file(place: Path) -> Path:
    (path,) = place.glob("census-*.pickle")
    return path


def test_a_census_is_built_once_then_refreshed_with_the_changes_since(db, linked, management, portal, clock,
                                                                      tmp_path):
    first, how = _current(db, clock, tmp_path)
    assert (first, how) == ({COMPANY: (ADMIN, MANAGER)}, BUILT)

    other = siret(1_0000_0000_0101)
    management.register_company(portal, other, "Martin", "chloe@martin.example")
    clock.advance(minutes=5)
    second, how = _current(db, clock, tmp_path)

    assert how == REFRESHED
    assert second == {COMPANY: (ADMIN, MANAGER), other: ("chloe@martin.example",)}


def test_a_store_emptied_behind_the_census_makes_it_built_again(db, linked, management, portal, clock, tmp_path):
    _current(db, clock, tmp_path)
    _empty(db)  # no audit record says so; the data version starts again from zero
    management.register_company(portal, siret(1_0000_0000_0102), "Nouvelle", "dan@nouvelle.example")

    found, how = _current(db, clock, tmp_path)

    assert how == BUILT
    assert found == {siret(1_0000_0000_0102): ("dan@nouvelle.example",)}


def test_a_bulk_load_after_the_census_makes_it_built_again(tmp_path, clock):
    database = Database(f"sqlite:///{tmp_path / 'bulk.sqlite3'}")
    database.create_schema()
    try:
        empty, how = _current(database, clock, tmp_path / "census")
        assert (empty, how) == ({}, BUILT)
        load_dataset(database, "small", seed=3, now=clock())

        loaded, how = _current(database, clock, tmp_path / "census")

        assert how == BUILT
        assert len(loaded) > 100
    finally:
        database.dispose()


@pytest.mark.parametrize("spoil", ["damaged", "writable by others", "a day old"])
def test_a_census_file_not_to_be_trusted_is_built_again(db, linked, clock, tmp_path, spoil):
    _current(db, clock, tmp_path)
    path = _only_file(tmp_path)
    if spoil == "damaged":
        path.write_bytes(b"not a census")
    elif spoil == "writable by others":
        path.chmod(0o666)
    else:
        kept = pickle.loads(path.read_bytes())
        kept.built = time.time() - census.MAX_AGE_SECONDS - 60
        path.write_bytes(pickle.dumps(kept))

    found, how = _current(db, clock, tmp_path)

    assert (found, how) == ({COMPANY: (ADMIN, MANAGER)}, BUILT)
    assert _only_file(tmp_path).stat().st_mode & 0o077 == 0  # written again, for this user only


def test_the_census_folder_comes_from_the_environment(tmp_path):
    assert census.folder({census.FOLDER_VARIABLE: "off"}) is None
    assert census.folder({census.FOLDER_VARIABLE: str(tmp_path)}) == tmp_path
    assert census.folder({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "authz"
    if os.environ.get("HOME"):
        assert census.folder({}) == Path(os.environ["HOME"]) / ".cache" / "authz"


def test_a_census_folder_that_cannot_be_written_only_costs_time(db, linked, clock, tmp_path):
    blocked = tmp_path / "a-file-not-a-folder"
    blocked.write_text("")

    for _ in range(2):  # nothing kept: each report builds the census again, and answers right
        assert _current(db, clock, blocked) == ({COMPANY: (ADMIN, MANAGER)}, BUILT)


def test_building_a_census_removes_census_files_too_old_to_be_of_use(db, linked, clock, tmp_path):
    stale, recent = tmp_path / "census-of-a-dropped-database.pickle", tmp_path / "census-of-another.pickle"
    for path in (stale, recent):
        path.write_bytes(b"")
    past = time.time() - census.MAX_AGE_SECONDS - 60
    os.utime(stale, (past, past))

    _current(db, clock, tmp_path)

    left = set(tmp_path.glob("census-*.pickle"))
    assert stale not in left and recent in left and len(left) == 2  # with the one just built
