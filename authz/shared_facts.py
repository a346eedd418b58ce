"""Facts of (user, company) pairs that the worker processes of one server share.

Each worker keeps its own answer cache (``authz.answers``). Behind gunicorn, as behind a
load balancer, the same pair reaches one worker and then another, and each used to read
its facts from the database: on the benchmark's stream, two workers read the same pair
twice. Here a worker finds the facts another worker of the same server read, with the
data version that worker read before them (its tag).

This file never decides what is true: the worker that takes facts from it checks them
with its own answer cache (``AnswerCache.fresh``), which knows every change it has seen
since it started: facts are taken only if no change after their tag named their user or
their company. Facts past their horizon (an end date, or the cache's max age) are never
handed out. Any failure of the file (missing, full, locked, corrupt) is a miss: the
worker reads the database as it would without it.

The file is SQLite, made for one server run (``authz serve`` makes it in a folder only
its user can open, and removes it when it stops): a table of ``slots`` rows, each pair
in one of the two rows its key hashes to. So its size is bounded by the number of slots,
without eviction work. The facts are written as plain tuples by ``marshal`` (the same
interpreter writes and reads them: they come back only from this file, which only this
server's processes write): read back, 18 us against 59 us for ``pickle``, whose load of
a frozen dataclass looks its fields up again for every object (measured on a pair with
three delegations and four grants).
"""

from __future__ import annotations

import logging
import marshal
import os
import sqlite3
import threading
import zlib
from contextlib import suppress
from pathlib import Path
from typing import Any

from authz import model

log = logging.getLogger(__name__)

Facts = tuple  # (model.User, model.Company, registered, pending designations), as in Entry

# A write waits this long for another worker's write to end, then gives up (a miss later).
BUSY_MILLISECONDS = 20
# Failures logged: the first, then one in this many (a broken file fails every lookup).
LOG_EVERY = 10_000

_SECOND = 0x9E3779B9  # the start value of the second row's CRC

_SCHEMA = ("CREATE TABLE IF NOT EXISTS facts (slot INTEGER PRIMARY KEY, email TEXT NOT NULL, "
           "siret TEXT NOT NULL, version INTEGER NOT NULL, valid_until REAL NOT NULL, facts BLOB NOT NULL)")
_GET = "SELECT email, siret, version, valid_until, facts FROM facts WHERE slot IN (?, ?)"
_HELD = "SELECT slot, email, siret, valid_until FROM facts WHERE slot IN (?, ?)"
_PUT = "INSERT OR REPLACE INTO facts (slot, email, siret, version, valid_until, facts) VALUES (?, ?, ?, ?, ?, ?)"


class SharedFacts:
    """The facts file of one server: ``get`` and ``put`` from any thread of any worker."""

    def __init__(self, path: str | Path, slots: int = 65_536):
        self.path = str(path)
        self.slots = max(1, slots)
        self._local = threading.local()  # each thread its connection (sqlite3 wants it so)
        self._failures = 0

    def get(self, email: str, siret: str, now: float) -> tuple[int, float, Facts] | None:
        """(tag, valid_until, facts) of the pair if this file holds them and ``now`` is
        before their horizon; None otherwise, and on any failure."""
        try:
            for row in self._connection().execute(_GET, self._slots(email, siret)):
                if row[0] == email and row[1] == siret:
                    return (row[2], row[3], _rebuilt(marshal.loads(row[4]))) if now < row[3] else None
            return None
        except Exception as exc:  # noqa: BLE001 - a broken cache is a miss, never an error
            self._failed("read", exc)
            return None

    def put(self, email: str, siret: str, version: int, valid_until: float, facts: Facts) -> None:
        """Keep the facts of a pair, read after data version ``version``, until ``valid_until``."""
        try:
            connection = self._connection()
            slot = self._slot_for(connection, email, siret)
            connection.execute(_PUT, (slot, email, siret, version, valid_until, marshal.dumps(_flat(facts))))
        except Exception as exc:  # noqa: BLE001 - a fact not shared is read again, that is all
            self._failed("write", exc)

    def _slots(self, email: str, siret: str) -> tuple[int, int]:
        """The two rows a pair may be kept in. With one row per pair, a pair whose row another
        took was read again, and took that row back: on the benchmark's stream (its 14,737
        pairs in 50,000 rows, asked in the same order of two apps in process), the second
        found 74% of the pairs the first had read (10,937); with a choice of two rows,
        97% (14,241). The hash is one every process computes alike (``hash`` of a str is not)."""
        key = f"{email}\0{siret}".encode()
        return zlib.crc32(key) % self.slots, zlib.crc32(key, _SECOND) % self.slots

    def _slot_for(self, connection: sqlite3.Connection, email: str, siret: str) -> int:
        """The row of the pair if it is kept (never a second copy), else an empty row, else
        the one whose facts end first."""
        first, second = self._slots(email, siret)
        held = {row[0]: row for row in connection.execute(_HELD, (first, second))}
        for slot, row in held.items():
            if row[1] == email and row[2] == siret:
                return slot
        for slot in (first, second):
            if slot not in held:
                return slot
        return min((first, second), key=lambda slot: held[slot][3])

    def _connection(self) -> sqlite3.Connection:
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        # A connection made before a fork belongs to the parent: the child makes its own.
        conn = sqlite3.connect(self.path, timeout=BUSY_MILLISECONDS / 1000, isolation_level=None,
                               check_same_thread=True)
        try:
            # WAL: a worker reading is never blocked by one writing. Nothing here needs
            # to survive a crash: the file is a cache, made again at every start.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._local.held = (os.getpid(), conn)
        return conn

    def _failed(self, what: str, exc: Exception) -> None:
        self._failures += 1
        if self._failures % LOG_EVERY == 1:
            log.warning("the shared facts file %s failed to %s (%s: %s); the database answers instead "
                        "(%d failures so far)", self.path, what, type(exc).__name__, exc, self._failures)
        held: Any = getattr(self._local, "held", None)
        self._local.held = None  # the next use opens the file again
        if held is not None and held[0] == os.getpid():
            with suppress(Exception):
                held[1].close()


def _delegation(d: model.Delegation) -> tuple:
    return (d.id, d.company, d.manager_email, d.firm, d.status, d.scope, d.ends_at)


def _grant(g: model.Grant) -> tuple:
    return (g.id, g.firm, g.collaborator, g.company, g.status, g.scope, g.ends_at)


def _flat(facts: Facts) -> tuple:
    """The facts as tuples of strings, numbers and frozensets, in the order of each type's fields."""
    user, company, registered, pending = facts
    return ((user.email, user.now, user.admin_of, user.manages, user.collaborates),
            (company.siret, tuple(map(_delegation, company.delegations)), tuple(map(_grant, company.grants))),
            registered, tuple(map(_delegation, pending)))


def _rebuilt(flat: tuple) -> Facts:
    user, (siret, delegations, grants), registered, pending = flat
    return (model.User(*user),
            model.Company(siret, tuple(model.Delegation(*d) for d in delegations),
                          tuple(model.Grant(*g) for g in grants)),
            registered, tuple(model.Delegation(*d) for d in pending))
