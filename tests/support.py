"""Test helpers shared by every kind of test: a settable clock and named SIRETs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from authz import migrate
from authz.audit import Context
from authz.dataset import load_dataset
from authz.identifiers import with_luhn_digit
from authz.store import Database

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def siret(n: int) -> str:
    """Return the n-th valid test SIRET (deterministic, Luhn-valid)."""
    return with_luhn_digit(f"{n:013d}")


# Named companies and firms of the story.
DUPONT = siret(1_0000_0000_0001)     # Maçonnerie Dupont, the member company
MARTIN = siret(1_0000_0000_0002)     # Charpente Martin, another member company
CABINET = siret(2_0000_0000_0001)    # Cabinet Legrand, the accounting firm
RIVAL = siret(2_0000_0000_0002)      # Cabinet Rival, another firm

ADMIN = "alice@dupont.example"       # company admin of DUPONT
OTHER_ADMIN = "armand@martin.example"  # company admin of MARTIN
MANAGER = "bruno@legrand.example"    # manager of CABINET
COLLAB = "chloe@legrand.example"     # collaborator of CABINET
COLLAB2 = "damien@legrand.example"   # another collaborator of CABINET
RIVAL_MANAGER = "rita@rival.example"  # manager of RIVAL
STRANGER = "eve@nowhere.example"     # linked to nothing


def as_user(email: str, request_id: str = "req-test") -> Context:
    """The context of a management call made by ``email`` through a portal key."""
    return Context(user=email, key="test-portal", request_id=request_id)


def small_store(folder: Path, seed: int, now: datetime) -> tuple[Database, object]:
    """A fresh SQLite in ``folder`` holding the generated ``small`` dataset: (database, load summary)."""
    url = f"sqlite:///{folder / 'small.sqlite3'}"
    migrate.upgrade(url)
    database = Database(url)
    return database, load_dataset(database, "small", seed=seed, now=now)


@contextmanager
def throwaway_postgres(server_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on ``server_url``'s PostgreSQL server, dropped afterwards."""
    server = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
