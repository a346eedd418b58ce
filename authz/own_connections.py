"""Driver connections a process keeps for its own reads, outside SQLAlchemy's pool.

Two reads run on them: the data version every request asks for (once per lease, see
``store.VERSION_LEASE_SECONDS``), and the facts a decision reads when its answer is not
cached. Each is one statement, needing no transaction, and for each, checking a
connection out of the pool and back in (a ``Connection``, the pool's events, its reset)
cost more than the query:
* the version: on PostgreSQL at national size, before the lease, a cached decision cost
  279-291 us of CPU in process this way against 324-332 us through the pool; under the
  benchmark's HTTP stream (two workers), 2,498-2,564 requests/s against 2,435-2,483, in
  turns. On SQLite (national, in process, 2026-11-29), a read right after a cached
  decision took 22 us this way against 47 us through the pool, and after 5 ms asleep
  126 us against 285 us (medians of 600 reads each);
* the facts: the checkout and check-in were 12% of the CPU of a decision that missed
  (cProfile, PostgreSQL national, 3,000 pairs never met, 2026-11-29).

A connection is made by the reading pool and detached from it, so it is made as the
pool's are (settings, autocommit, SQLite's pragmas). A thread takes one that is free or
makes one, and gives it back; at most ``keep`` wait, free, for the next. One that fails
is closed; if it had served before (the database restarted, or closed it while idle),
the read is made once more on a new one, as a pool's ping would. A read is never
answered from nowhere: a failure raises ``StoreUnavailable``. After a fork, the child
makes its own connections and leaves the parent's alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import SQLAlchemyError

from authz.errors import StoreUnavailable

T = TypeVar("T")


def always(exc: Exception, connection: Any) -> bool:
    return True


class OwnConnections:
    """Connections of this process's own, for reads of one statement each (``run``)."""

    def __init__(self, engine: SAEngine, keep: int = 4):
        self._engine = engine
        self._keep = keep
        self._error = engine.dialect.loaded_dbapi.Error
        # (pid of the process that made it, connection): list.pop and list.append are
        # atomic, so threads share it without a lock.
        self._free: list[tuple[int, Any]] = []
        self._closed = False

    def run(self, work: Callable[[Any], T], again: Callable[[Exception, Any], bool] = always) -> T:
        """``work(connection)`` on a driver connection; on a driver error, once more on a new
        connection if the failed one had served before and ``again(error, connection)``."""
        for _ in range(2):
            connection, fresh = self._take()
            try:
                result = work(connection)
            except self._error as exc:
                retry = not fresh and again(exc, connection)
                self._close(connection)
                if not retry:
                    raise StoreUnavailable("the database is unavailable") from exc
                continue
            except BaseException:
                self._close(connection)  # in an unknown state
                raise
            self._give_back(connection)
            return result
        raise AssertionError("unreachable: the second try runs on a fresh connection")

    def _take(self) -> tuple[Any, bool]:
        pid = os.getpid()
        while True:
            try:
                made_by, connection = self._free.pop()
            except IndexError:
                break
            if made_by == pid:
                return connection, False
        try:
            pooled = self._engine.raw_connection()
        except (self._error, SQLAlchemyError) as exc:
            raise StoreUnavailable("the database is unavailable") from exc
        connection = pooled.dbapi_connection
        pooled.detach()
        return connection, True

    def _give_back(self, connection: Any) -> None:
        if self._closed or len(self._free) >= self._keep:
            self._close(connection)
        else:
            self._free.append((os.getpid(), connection))

    @staticmethod
    def _close(connection: Any) -> None:
        with suppress(Exception):  # it may be gone already
            connection.close()

    def close(self) -> None:
        """Close the free connections of this process; one in use is closed when given back."""
        self._closed = True
        pid = os.getpid()
        while self._free:
            made_by, connection = self._free.pop()
            if made_by == pid:
                self._close(connection)
