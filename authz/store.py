"""Persistence: the database handle, transactions, and every query the use cases run.

A ``Database`` hands out ``Tx`` objects; a ``Tx`` commits when its ``with`` block
ends normally and rolls back otherwise. Rows come back as records or policy facts
(``authz.model``); nothing outside this module writes SQL.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    String,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    union,
    union_all,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InvalidatePoolError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from authz import answers, model
from authz.errors import Conflict, StoreUnavailable
from authz.own_connections import OwnConnections
from authz.tables import (
    api_keys,
    audit_log,
    collaborators,
    companies,
    company_admins,
    data_changes,
    data_version,
    delegations,
    firms,
    grants,
    impact_reports,
    metadata,
    policy_events,
    policy_snapshots,
    users,
)

DEFAULT_URL = "sqlite:///var/authz.sqlite3"


def new_id() -> str:
    """Return an opaque, unguessable identifier for a delegation or grant."""
    return secrets.token_hex(12)


def join_scope(scope: Iterable[str]) -> str:
    return " ".join(sorted(set(scope)))


def split_scope(stored: str) -> tuple[str, ...]:
    return tuple(stored.split()) if stored else ()


@lru_cache(maxsize=4096)
def scope_set(stored: str) -> frozenset[str]:
    """Stored scope text as a frozenset, shared: a store holds a few hundred distinct
    scopes (sets of the policy's rights) over a million links, and a decision's facts or
    a search's 14,000 entries would otherwise each build their own."""
    return frozenset(split_scope(stored))


def _status_is(column, status: model.LinkStatus):
    """``column = 'active'`` (or another status), the status written into the SQL text.

    The partial indexes of ``authz.tables`` hold one status; with the status bound as a
    parameter, SQLite cannot know when preparing whether such an index applies, and
    prepares the statement again at every run to decide. A decision's facts statement
    (national dataset, one pair, warm) took 83 us per run that way against 26 us with
    the status written in. The statuses are the model's own constants, never input.
    """
    return column == literal_column(f"'{status.value}'")


class _Batch:
    """The statements that read rows for many keys at once, built once (building a
    select() costs more than running it on an indexed column), in three forms.

    ``IN (...)`` with one placeholder per key; for PostgreSQL, one array parameter
    (``= ANY(...)``); for SQLite, one JSON array parameter (``IN (SELECT value FROM
    json_each(...))``). Measured on the national dataset: for one key the PostgreSQL
    array costs about 0.1 ms more per query; for the hundred of an ``evaluations`` call,
    7 ms against 89 ms (the statement's text no longer changes with the number of keys,
    so psycopg prepares it, and the planner no longer ANDs two large bitmap scans). On
    SQLite, ten thousand placeholders (a big firm's client list) cost more to render and
    parse than the query. For a few keys, IN lists stay faster on both: one pair's
    ``decision_facts``, 0.15 ms with an array against 0.39 ms on PostgreSQL, 0.09 ms with
    IN against 0.15 ms with JSON on SQLite.
    """

    def __init__(self, form: str):
        self.form = form
        self._on_driver: dict[tuple[str, type, str], _DriverQuery] = {}

        def among(column, name: str):
            if form == "arrays":
                return column == any_(bindparam(name, type_=ARRAY(String)))
            if form == "json":
                values = func.json_each(bindparam(name, type_=JSON))
                return column.in_(select(literal_column("value")).select_from(values))
            return column.in_(bindparam(name, expanding=True))

        def only_filtered(column):
            # Keeps SQLite on a batch's company index, filtering on this column: probing the
            # two-column index for each company times each e-mail or firm cost more (100
            # items of the national dataset: 1.8 ms a batch against 2.7 ms).
            return column.concat("") if form == "json" else column

        self.user_roles = union_all(
            select(company_admins.c.user_email, literal("admin"), company_admins.c.company_siret)
            .where(among(company_admins.c.user_email, "emails")),
            select(firms.c.manager_email, literal("manager"), firms.c.siret)
            .where(among(firms.c.manager_email, "emails")),
            select(collaborators.c.user_email, literal("collaborator"), collaborators.c.firm_siret)
            .where(among(collaborators.c.user_email, "emails")),
        )
        self.delegations_to_any_firm = select(delegations).where(
            among(delegations.c.company_siret, "sirets"), delegations.c.firm_siret.is_not(None)
        )
        self.delegations_to_firms = select(delegations).where(
            among(delegations.c.company_siret, "sirets"), among(delegations.c.firm_siret, "firms")
        )
        self.grants = select(grants).where(among(grants.c.company_siret, "sirets"))
        self.grants_to = self.grants.where(among(grants.c.collaborator_email, "people"))
        # The links of companies to some firms and people, both kinds in one statement.
        self.links_to = union_all(
            select(literal("delegation").label("kind"), delegations.c.id, delegations.c.company_siret,
                   delegations.c.manager_email, cast(null(), String).label("collaborator_email"),
                   delegations.c.firm_siret, delegations.c.status, delegations.c.scope, delegations.c.ends_at)
            .where(among(delegations.c.company_siret, "sirets"), among(delegations.c.firm_siret, "firms")),
            select(literal("grant"), grants.c.id, grants.c.company_siret, cast(null(), String),
                   grants.c.collaborator_email, grants.c.firm_siret, grants.c.status, grants.c.scope,
                   grants.c.ends_at)
            .where(among(grants.c.company_siret, "sirets"), among(grants.c.collaborator_email, "people")),
        )
        # What a decision loads about (user, company) pairs, in one statement (one round
        # trip): the links of the companies to the firms of those users and to those users,
        # each company's pending designations and whether it is registered (the reason of a
        # denial), and each user's roles. Pending designations are read per company, not per
        # pair: a batch's e-mails times its companies made SQLite probe an index that often.
        # The delegation arm comes first: it types the result's columns (ends_at is a date).
        # Links to another user's firm of the same batch come along; ``reaching`` drops them.
        firms_of_users = union(
            select(firms.c.siret).where(among(firms.c.manager_email, "emails")),
            select(collaborators.c.firm_siret).where(among(collaborators.c.user_email, "emails")),
        )
        no_text = cast(null(), String)

        def link_arms(only_filtered):
            return (
                select(literal("delegation").label("kind"), delegations.c.id, delegations.c.company_siret,
                       delegations.c.manager_email, no_text.label("collaborator_email"), delegations.c.firm_siret,
                       delegations.c.status, delegations.c.scope, delegations.c.ends_at, no_text.label("user_email"))
                .where(among(delegations.c.company_siret, "sirets"),
                       only_filtered(delegations.c.firm_siret).in_(firms_of_users)),
                select(literal("pending"), delegations.c.id, delegations.c.company_siret, delegations.c.manager_email,
                       no_text, delegations.c.firm_siret, delegations.c.status, delegations.c.scope,
                       delegations.c.ends_at, no_text)
                .where(among(delegations.c.company_siret, "sirets"),
                       _status_is(delegations.c.status, model.LinkStatus.PENDING)),
                select(literal("grant"), grants.c.id, grants.c.company_siret, no_text, grants.c.collaborator_email,
                       grants.c.firm_siret, grants.c.status, grants.c.scope, grants.c.ends_at, no_text)
                .where(among(grants.c.company_siret, "sirets"),
                       among(only_filtered(grants.c.collaborator_email), "emails")),
                select(literal("admin"), no_text, company_admins.c.company_siret, no_text, no_text, no_text, no_text,
                       no_text, null(), company_admins.c.user_email)
                .where(among(company_admins.c.user_email, "emails")),
                select(literal("manager"), no_text, no_text, no_text, no_text, firms.c.siret, no_text, no_text, null(),
                       firms.c.manager_email)
                .where(among(firms.c.manager_email, "emails")),
                select(literal("collaborator"), no_text, no_text, no_text, no_text, collaborators.c.firm_siret, no_text,
                       no_text, null(), collaborators.c.user_email)
                .where(among(collaborators.c.user_email, "emails")),
            )

        registration = (
            select(literal("company"), no_text, companies.c.siret, no_text, no_text, no_text, no_text, no_text,
                   null(), no_text)
            .where(among(companies.c.siret, "sirets"))
        )
        self.decision_facts = union_all(*link_arms(only_filtered), registration)
        # A search's candidates: one user's companies, read from its link rows. Registration
        # is known (links hold a foreign key to ``companies``, whose rows are never
        # deleted), and its arm would return one row per company: for the largest firm's
        # 13,937 clients, the read took 136-139 ms without it against 195 ms with it
        # (PostgreSQL, medians of 8 in two runs, statement to facts). With one
        # e-mail, SQLite does best starting from it and its firms, not from each company:
        # that statement took 60-65 ms there, against 170-190 ms filtered as for a batch.
        self.search_facts = union_all(*link_arms(lambda column: column))

    def on_driver(self, name: str, dialect) -> _DriverQuery:
        """Statement ``name`` run on the driver (see ``_DriverQuery``), made once per dialect."""
        key = (name, type(dialect), dialect.paramstyle)
        query = self._on_driver.get(key)
        if query is None:
            query = self._on_driver[key] = _DriverQuery(getattr(self, name), dialect, self.form)
        return query


class _DriverQuery:
    """A select run on the driver's own cursor, for the read every decision that misses the
    cache makes: SQLAlchemy's work per execution (expanding the key lists, building result
    rows) costs more than the query. Measured on the national dataset, one question's
    ``decision_facts``: 0.11 ms against 0.22 ms on PostgreSQL, 0.08 against 0.15-0.21 ms
    on SQLite.

    The SQL text is SQLAlchemy's, rendered once per dialect and form, and for ``IN (...)``
    lists once per number of keys (``_batch`` keeps those to ``_FEW`` keys; a longer IN list
    is rendered at each call, not kept). Rows come back as named tuples, each value
    converted as SQLAlchemy would (dates). A driver error fails closed, as ``_failures``
    does; a lost connection is dropped from the pool.
    """

    def __init__(self, statement, dialect, form: str):
        self._dialect = dialect
        self._pack = json.dumps if form == "json" else list
        self._expanding = form == "in"
        self._compiled = statement.compile(dialect=dialect)
        self._texts: dict[tuple[int, ...], tuple] = {}
        columns = list(statement.selected_columns)
        self._row: Any = namedtuple("_Row", [column.name for column in columns])  # type: ignore[misc]
        self._convert = [
            (index, processor) for index, column in enumerate(columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]

    def _text(self, lists: dict[str, list[str]]) -> tuple:
        """The SQL text for lists of these lengths, its other parameters, where each key goes."""
        # One parameter per list (an array) makes one text for every length.
        shape = tuple(len(keys) for keys in lists.values()) if self._expanding else ()
        held = self._texts.get(shape)
        if held is not None:
            return held
        markers = {name: [f"\0{name}\0{index}" for index in range(len(keys) if self._expanding else 1)]
                   for name, keys in lists.items()}
        place = {marker: (name, index) for name, marked in markers.items() for index, marker in enumerate(marked)}
        state = self._compiled.construct_expanded_state(markers)
        slots: dict[str, list[str] | str] = {}
        for param, value in state.parameters.items():
            if isinstance(value, list):  # one parameter for the whole list (an array)
                slots.update((name, param) for name, marked in markers.items() if value == marked)
            elif isinstance(value, str) and value in place:  # one parameter per key
                name, index = place[value]
                places = slots.setdefault(name, [""] * len(markers[name]))
                assert isinstance(places, list)
                places[index] = param
        keyed = {param for slot in slots.values() for param in ([slot] if isinstance(slot, str) else slot)}
        fixed = {param: value for param, value in state.parameters.items() if param not in keyed}
        held = (state.statement, fixed, slots, state.positiontup)
        if not self._expanding or max(shape, default=0) <= _FEW:
            self._texts[shape] = held
        return held

    def rows(self, conn: Connection, **lists: list[str]) -> list:
        """The rows, read on the driver connection of a SQLAlchemy ``Connection``."""
        driver: Any = conn.connection.driver_connection
        try:
            return self.fetch(driver, **lists)
        except self._dialect.loaded_dbapi.Error as exc:
            if self._dialect.is_disconnect(exc, driver, None):
                conn.invalidate(exc)
            raise StoreUnavailable("the database is unavailable") from exc

    def fetch(self, driver: Any, **lists: list[str]) -> list:
        """The rows, read on a driver connection; a driver error is raised as it comes."""
        sql, fixed, slots, order = self._text(lists)
        values = dict(fixed)
        for name, keys in lists.items():
            slot = slots.get(name)
            if isinstance(slot, str):
                values[slot] = self._pack(keys)
            elif slot is not None:
                values.update(zip(slot, keys, strict=True))
        args = values if order is None else [values[param] for param in order]
        cursor = driver.cursor()
        try:
            cursor.execute(sql, args)
            found = cursor.fetchall()
        finally:
            with suppress(Exception):  # the connection may be gone already
                cursor.close()
        make = self._row._make
        rows = [make(row) for row in found]
        for index, processor in self._convert:
            name = self._row._fields[index]
            for at, row in enumerate(rows):
                if row[index] is not None:
                    rows[at] = row._replace(**{name: processor(row[index])})
        return rows


_IN_LISTS = _Batch("in")
_ARRAYS = _Batch("arrays")
_JSON = _Batch("json")
_FEW = 4  # keys up to which IN lists stay faster
_DATA_VERSION = select(data_version.c.version).where(data_version.c.id == 1)
_API_KEY = select(api_keys.c.name, api_keys.c.role).where(
    api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
)


@contextmanager
def _failures() -> Iterator[None]:
    """Turn database failures into the errors callers expect: fail closed, never a 500."""
    try:
        yield
    except IntegrityError as exc:
        # A unique index refused a row a concurrent call wrote first: nothing was saved.
        raise Conflict("this change collided with a change made at the same time; try again",
                       code="concurrent_change") from exc
    except OperationalError as exc:
        raise StoreUnavailable("the database is unavailable") from exc
    except PoolTimeout as exc:
        # Every connection of the pool stayed busy for pool_timeout: more requests at once
        # than connections (threads), or a database that answers too slowly.
        raise StoreUnavailable("no database connection came free in time") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable("the database connection was lost") from exc
        raise


# The data version is leased: a version read sent at instant ``s`` answers this
# process's requests until ``s + VERSION_LEASE_SECONDS``, and a write that bumped it
# returns only once that long has passed since its commit (``outlive_leases``). So a
# request that starts after a write returned uses a read sent after that commit, which
# sees it (one database, no replica), in whichever process and host the request runs:
# "after a write returns, every worker answers from the new state" holds as with a read
# per request. It is the reasoning of Spanner's commit wait, with durations measured on
# each host's own clock (``lease_clock``), never timestamps compared across hosts. A
# worker under load reads the version once per lease instead of once per request: under
# the benchmark's PostgreSQL stream, 2,015-2,140 requests/s against 1,679-1,794 with a
# read per request (three pairs in turns); every write that bumps the version takes
# 6 ms longer.
VERSION_LEASE_SECONDS = 0.005
# How much longer than a lease a write waits: the clocks of two hosts may run
# at rates that differ by NTP's slew limit (500 ppm: 2.5 µs over a lease).
_LEASE_MARGIN_SECONDS = 0.001

# What a version changed is kept for this many versions after it (``data_changes``): a
# process that last saw an older version forgets all its answers.
CHANGES_KEPT = 10_000
# A change naming more scopes than this is recorded as changing everything.
SCOPES_AT_MOST = 1_000


def _boot_clock() -> float:
    """Seconds since boot, suspended time included (unlike ``time.monotonic`` on Linux): a
    host woken from sleep must not take a lease read before it slept for a fresh one."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


lease_clock = _boot_clock if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


def outlive_leases() -> None:
    """Wait until every version read sent before this moment has stopped answering."""
    time.sleep(VERSION_LEASE_SECONDS + _LEASE_MARGIN_SECONDS)


class Database:
    """A connection pool for one database URL (SQLite file or PostgreSQL)."""

    def __init__(self, url: str | None = None, **engine_options):
        url = url or DEFAULT_URL
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine_options.setdefault("connect_args", {"timeout": 30})
        else:
            engine_options.setdefault("pool_size", 5)
            engine_options.setdefault("max_overflow", 5)
            engine_options.setdefault("pool_timeout", 5)
        self.engine: SAEngine = create_engine(url, **engine_options)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
            self.reader = self.engine
        else:
            _ping_after_idle(self.engine)
            # Decisions read outside transactions (see reading()): a pool of connections
            # made in autocommit mode, so that no checkout switches a connection's mode
            # and back (two driver calls and a reset, on every request).
            self.reader = create_engine(url, isolation_level="AUTOCOMMIT", **engine_options)
            _ping_after_idle(self.reader)
        self._version_sql = str(_DATA_VERSION.compile(self.engine, compile_kwargs={"literal_binds": True}))
        # An in-memory SQLite database lives in its pool's one connection, which must stay there.
        in_memory = self.is_sqlite and (not parsed.database or parsed.database == ":memory:"
                                        or "memory" in parsed.render_as_string())
        self._own = None if in_memory else OwnConnections(self.reader)
        self._lease: tuple[float, int | None] | None = None  # (lease_clock() when the read was sent, version)

    def create_schema(self) -> None:
        """Create missing tables and indexes (idempotent)."""
        metadata.create_all(self.engine)

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        """Yield a ``Tx``; commit if the block ends normally, roll back otherwise. A
        transaction that bumped the data version returns only once the leases of the
        versions read before its commit are over (``outlive_leases``).

        Database failures surface as ``StoreUnavailable`` so callers fail closed.
        """
        with _failures(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_immediate=write)
            transaction = conn.begin()
            txid = None
            try:
                if write and not self.is_sqlite:
                    # Remembered so that a COMMIT whose reply is lost can be checked.
                    txid = conn.exec_driver_sql("SELECT txid_current()").scalar()
                tx = Tx(conn, self.is_sqlite)
                yield tx
                if tx.bumped_version:
                    tx.write_changes()
            except BaseException:
                with suppress(Exception):  # the connection may be gone already
                    transaction.rollback()
                raise
            try:
                transaction.commit()
            except DBAPIError as exc:
                lost = isinstance(exc, OperationalError) or exc.connection_invalidated
                if txid is None or not lost or not self._committed(txid):
                    raise
                # the reply was lost, not the change: it is saved
        if tx.bumped_version:
            outlive_leases()

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        """Yield a ``Tx`` for reads only, each statement seeing what was committed before
        it began (as in a transaction at PostgreSQL's default isolation, READ COMMITTED).

        On PostgreSQL the statements run without BEGIN and COMMIT, on the reading pool made
        in autocommit mode: one round trip each, nothing more. On SQLite, the statements run
        through SQLAlchemy share one read transaction (BEGIN at the first, rolled back when
        the block ends: a search sees one snapshot); a decision's facts, one statement on
        the driver's cursor (``_DriverQuery``), run without one. BEGIN and COMMIT through
        SQLAlchemy cost about 9% of the instructions of a decision that misses the cache
        (209k of 2,449k, callgrind, SQLite national). An answer from the cache needs none
        of this, only ``data_version``.
        """
        with _failures(), self.reader.connect() as conn:
            yield Tx(conn, self.is_sqlite)

    def data_version(self) -> int | None:
        """The current data version (None if its row is missing), as ``Tx.data_version``,
        read at most once per lease (see ``VERSION_LEASE_SECONDS``). Every request asks for
        it; it is read with ``OwnConnections`` (on a pooled connection for an in-memory
        SQLite database). Failures are those of
        ``transaction``: ``StoreUnavailable``, never a version read from nowhere, and a
        failed read leaves no lease."""
        sent = lease_clock()  # taken before the read is sent: the lease never outlasts it
        lease = self._lease
        if lease is not None and sent - lease[0] < VERSION_LEASE_SECONDS:
            return lease[1]
        version = self._read_version()
        self._lease = (sent, version)
        return version

    def forget_data_version(self) -> None:
        """Give up the lease: the next ``data_version`` reads the version (always safe)."""
        self._lease = None

    def _read_version(self) -> int | None:
        if self._own is not None:
            return self._own.run(self._version_on)
        return self._pooled_version()

    def _version_on(self, driver: Any) -> int | None:
        cursor = driver.cursor()
        try:
            cursor.execute(self._version_sql)
            row = cursor.fetchone()
        finally:
            with suppress(Exception):  # the connection may be gone already
                cursor.close()
        return None if row is None else row[0]

    def decision_facts(self, pairs: Iterable[tuple[str, str]], now: float, search: bool = False) -> DecisionFacts:
        """``Tx.decision_facts`` in a statement of its own, on a connection of the process's
        own (``OwnConnections``; on a pooled one for an in-memory SQLite database). If the
        database closed that connection since its last read, the read is made again, once,
        on a new one; any other failure fails closed (``StoreUnavailable``)."""
        own = self._own
        if own is None:
            with self.reading() as tx:
                return tx.decision_facts(pairs, now, search)
        dialect = self.reader.dialect

        def rows(query: _DriverQuery, **lists: list[str]) -> list:
            return own.run(lambda driver: query.fetch(driver, **lists),
                           again=lambda exc, driver: dialect.is_disconnect(exc, driver, None))  # type: ignore[arg-type]

        return _decision_facts(pairs, now, search, self.is_sqlite, dialect, rows)

    def _pooled_version(self) -> int | None:
        """The data version of an in-memory SQLite database, read on its pool's one driver
        connection, skipping SQLAlchemy's Connection (0.04 ms against 0.24 ms through a
        Connection, measured)."""
        dbapi_error = self.reader.dialect.loaded_dbapi.Error
        try:
            pooled = self.reader.raw_connection()
        except (dbapi_error, SQLAlchemyError) as exc:
            raise StoreUnavailable("the database is unavailable") from exc
        cursor = None
        try:
            cursor = pooled.cursor()
            cursor.execute(self._version_sql)
            row = cursor.fetchone()
            cursor.close()
        except dbapi_error as exc:
            if self.reader.dialect.is_disconnect(exc, pooled.driver_connection, cursor):
                pooled.invalidate(exc)
            raise StoreUnavailable("the database is unavailable") from exc
        finally:
            pooled.close()
        return None if row is None else row[0]

    def _committed(self, txid: int) -> bool:
        """Ask PostgreSQL, on a fresh connection, whether transaction ``txid`` committed.

        Raises ``StoreUnavailable`` (outcome unknown) if the database cannot tell.
        """
        try:
            with self.engine.connect() as conn:
                status = conn.exec_driver_sql("SELECT txid_status(%(txid)s)", {"txid": txid}).scalar()
        except DBAPIError as exc:
            raise StoreUnavailable(
                "the database went away while saving; the change may or may not be saved",
                code="outcome_unknown",
            ) from exc
        if status == "committed":
            return True
        if status == "in progress":
            raise StoreUnavailable(
                "the database has not finished saving the change; look again before retrying",
                code="outcome_unknown",
            )
        return False

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except (OperationalError, DBAPIError):
            return False

    def dispose(self) -> None:
        if self._own is not None:
            self._own.close()
        self.engine.dispose()
        self.reader.dispose()


# A pooled connection idle this long is pinged before use (after a database restart,
# say); one used more recently is not. SQLAlchemy's pool_pre_ping pings at every
# checkout: one more round trip for every request, 0.15-0.2 ms on PostgreSQL here. Under
# load, a connection that died less than this ago fails its request instead (503, fail
# closed), and that failure makes the pool drop every connection made before it.
# HikariCP's aliveBypassWindowMs is the same idea.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_after_idle(engine: SAEngine) -> None:
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, proxy) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            # As pool_pre_ping does: drop this connection and every older one, retry with a new one.
            raise InvalidatePoolError("a pooled connection failed its ping") from exc


def _configure_sqlite(engine: SAEngine) -> None:
    """Foreign keys on, WAL, and BEGIN IMMEDIATE for writes so writers queue, not fail."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _in_list(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


def _decision_facts(pairs: Iterable[tuple[str, str]], now: float, search: bool, is_sqlite: bool, dialect,
                    rows: Callable[..., list]) -> DecisionFacts:
    """``Tx.decision_facts``, its statement's rows read by ``rows(query, emails=..., sirets=...)``."""
    wanted = set(pairs)
    emails = _in_list(email for email, _ in wanted)
    sirets = _in_list(siret for _, siret in wanted)
    roles: dict[str, dict[str, set[str]]] = {
        email: {"admin": set(), "manager": set(), "collaborator": set()} for email in emails
    }
    links: dict[str, tuple[list, list]] = {siret: ([], []) for siret in sirets}
    registered: set[str] = set(sirets) if search else set()
    pending: dict[tuple[str, str], list[model.Delegation]] = {}
    if wanted:
        query = _batch_for(is_sqlite, emails, sirets).on_driver("search_facts" if search else "decision_facts",
                                                                 dialect)
        for row in rows(query, emails=emails, sirets=sirets):
            if row.kind == "delegation":
                links[row.company_siret][0].append(delegation_fact(row))
            elif row.kind == "pending":
                if (row.manager_email, row.company_siret) in wanted:
                    pending.setdefault((row.manager_email, row.company_siret), []).append(delegation_fact(row))
            elif row.kind == "grant":
                links[row.company_siret][1].append(grant_fact(row))
            elif row.kind == "company":
                registered.add(row.company_siret)
            else:
                roles[row.user_email][row.kind].add(row.company_siret if row.kind == "admin" else row.firm_siret)
    users = {
        email: model.User(email=email, now=now, admin_of=frozenset(found["admin"]),
                          manages=frozenset(found["manager"]), collaborates=frozenset(found["collaborator"]))
        for email, found in roles.items()
    }
    return DecisionFacts(users, _companies(links), frozenset(registered),
                         {pair: tuple(sorted(found, key=lambda d: d.id)) for pair, found in pending.items()})


def _batch_for(is_sqlite: bool, *lists: list[str]) -> _Batch:
    """The form of the batch statements for these lists of keys (see ``_Batch``)."""
    if max(map(len, lists)) <= _FEW:
        return _IN_LISTS
    return _JSON if is_sqlite else _ARRAYS


@dataclass(frozen=True)
class DecisionFacts:
    """What ``Tx.decision_facts`` read for some (e-mail, SIRET) pairs."""

    users: dict[str, model.User]
    companies: dict[str, model.Company]  # every link read, before ``reaching`` keeps a user's
    registered: frozenset[str]  # the SIRETs of registered companies
    pending: dict[tuple[str, str], tuple[model.Delegation, ...]]  # (e-mail, SIRET): pending designations

    def of(self, email: str, siret: str) -> tuple[model.User, model.Company, bool, tuple[model.Delegation, ...]]:
        """The facts of one pair: its user, the company's links reaching that user, whether
        the company is registered, and its pending designations to that e-mail (by id)."""
        user = self.users[email]
        company = reaching(self.companies[siret], user)
        return user, company, siret in self.registered, self.pending.get((email, siret), ())


class Tx:
    """One transaction: reads and writes, all or nothing."""

    def __init__(self, conn: Connection, is_sqlite: bool):
        self.conn = conn
        self.is_sqlite = is_sqlite
        self.bumped_version = False
        self.version: int | None = None  # the data version this transaction bumped to
        # What its writes touched (``answers.USER`` + email, ``answers.COMPANY`` + siret,
        # ``answers.KEYS``): the cached answers it may change. Every write method adds to it.
        self.scopes: set[str] = set()

    def _touched(self, *, company: str | None = None, user: str | None = None) -> None:
        if company is not None:
            self.scopes.add(answers.COMPANY + company)
        if user is not None:
            self.scopes.add(answers.USER + user)

    def _batch(self, *lists: list[str]) -> _Batch:
        return _batch_for(self.is_sqlite, *lists)

    def _lock(self, stmt):
        # SQLite serialises writers with BEGIN IMMEDIATE; PostgreSQL needs row locks.
        return stmt if self.is_sqlite else stmt.with_for_update()

    # ---- users -------------------------------------------------------------------

    def ensure_user(self, email: str, now: datetime) -> None:
        """Create the user unless it exists, even when a concurrent call creates it too."""
        dialect = sqlite_insert if self.is_sqlite else postgresql_insert
        self.conn.execute(dialect(users).values(email=email, created_at=now).on_conflict_do_nothing())

    # ---- policy facts --------------------------------------------------------------

    def user_facts(self, email: str, now: float) -> model.User:
        """Load everything the policy may ask about a user, in one indexed query."""
        return self.users_facts([email], now)[email]

    def users_facts(self, emails: Iterable[str], now: float) -> dict[str, model.User]:
        emails = _in_list(emails)
        roles: dict[str, dict[str, set[str]]] = {
            email: {"admin": set(), "manager": set(), "collaborator": set()} for email in emails
        }
        if emails:
            for email, role, siret in self.conn.execute(self._batch(emails).user_roles, {"emails": emails}):
                roles[email][role].add(siret)
        return {
            email: model.User(
                email=email,
                now=now,
                admin_of=frozenset(found["admin"]),
                manages=frozenset(found["manager"]),
                collaborates=frozenset(found["collaborator"]),
            )
            for email, found in roles.items()
        }

    def companies_facts(
        self,
        sirets: Iterable[str],
        firms: Iterable[str] | None = None,
        collaborators: Iterable[str] | None = None,
        with_grants: bool = True,
    ) -> dict[str, model.Company]:
        """Load the delegations and grants of several companies.

        ``firms`` restricts delegations to those firms (None: every firm);
        ``collaborators`` restricts grants to those people (None: everyone);
        ``with_grants=False`` skips grants (questions about the firm alone).
        """
        sirets = _in_list(sirets)
        links: dict[str, tuple[list, list]] = {siret: ([], []) for siret in sirets}
        if not sirets:
            return {}
        firm_list = None if firms is None else _in_list(firms)
        if firm_list and with_grants and collaborators is not None:
            people = _in_list(collaborators)
            statement = self._batch(sirets, firm_list, people).links_to
            for row in self.conn.execute(statement, {"sirets": sirets, "firms": firm_list, "people": people}):
                if row.kind == "delegation":
                    links[row.company_siret][0].append(delegation_fact(row))
                else:
                    links[row.company_siret][1].append(grant_fact(row))
            return _companies(links)
        rows: Iterable = ()
        if firm_list is None:
            rows = self.conn.execute(self._batch(sirets).delegations_to_any_firm, {"sirets": sirets})
        elif firm_list:
            rows = self.conn.execute(self._batch(sirets, firm_list).delegations_to_firms,
                                     {"sirets": sirets, "firms": firm_list})
        for row in rows:
            links[row.company_siret][0].append(delegation_fact(row))
        if with_grants:
            if collaborators is None:
                rows = self.conn.execute(self._batch(sirets).grants, {"sirets": sirets})
            else:
                people = _in_list(collaborators)
                rows = self.conn.execute(self._batch(sirets, people).grants_to, {"sirets": sirets, "people": people})
            for row in rows:
                links[row.company_siret][1].append(grant_fact(row))
        return _companies(links)

    def companies_reaching(self, user: model.User) -> list[str]:
        """Every company linked to ``user`` (as admin, manager or grantee), sorted."""
        candidates = set(user.admin_of)
        if user.manages:
            rows = self.conn.execute(
                select(delegations.c.company_siret)
                .where(delegations.c.firm_siret.in_(_in_list(user.manages)))
                .distinct()
            )
            candidates.update(row[0] for row in rows)
        rows = self.conn.execute(
            select(grants.c.company_siret).where(grants.c.collaborator_email == user.email).distinct()
        )
        candidates.update(row[0] for row in rows)
        return sorted(candidates)

    def users_reaching(self, siret: str) -> list[str]:
        """Every user linked to company ``siret`` (admin, manager of a firm, grantee)."""
        return self.users_reaching_each([siret])[siret]

    def users_reaching_each(self, sirets: Sequence[str]) -> dict[str, list[str]]:
        """``users_reaching`` for several companies, in one query."""
        sirets = _in_list(sirets)
        found: dict[str, set[str]] = {siret: set() for siret in sirets}
        query = union_all(
            select(company_admins.c.company_siret, company_admins.c.user_email)
            .where(company_admins.c.company_siret.in_(sirets)),
            select(delegations.c.company_siret, firms.c.manager_email)
            .join(delegations, delegations.c.firm_siret == firms.c.siret)
            .where(delegations.c.company_siret.in_(sirets)),
            select(grants.c.company_siret, grants.c.collaborator_email).where(grants.c.company_siret.in_(sirets)),
        )
        for siret, email in self.conn.execute(query):
            found[siret].add(email)
        return {siret: sorted(emails) for siret, emails in found.items()}

    # ---- companies and admins -------------------------------------------------------

    def company_exists(self, siret: str, lock: bool = False) -> bool:
        query = select(companies.c.siret).where(companies.c.siret == siret)
        return self.conn.execute(self._lock(query) if lock else query).first() is not None

    def decision_facts(self, pairs: Iterable[tuple[str, str]], now: float, search: bool = False) -> DecisionFacts:
        """Everything decisions on (e-mail, SIRET) pairs need, their denials' reasons
        included, in one statement (see ``_Batch.decision_facts``).

        ``search``: the pairs are a search's candidates, one user's companies read from its
        link rows; each company is registered, and that is not read again (see
        ``_Batch.search_facts``)."""
        return _decision_facts(pairs, now, search, self.is_sqlite, self.conn.dialect,
                               lambda query, **lists: query.rows(self.conn, **lists))

    def insert_company(self, siret: str, name: str, now: datetime) -> None:
        self._touched(company=siret)
        self.conn.execute(insert(companies).values(siret=siret, name=name, created_at=now))

    def company(self, siret: str) -> model.CompanyRecord | None:
        row = self.conn.execute(select(companies).where(companies.c.siret == siret)).first()
        if row is None:
            return None
        return model.CompanyRecord(
            siret=row.siret, name=row.name, admins=tuple(self.admins(siret)), created_at=row.created_at
        )

    def linked_companies(self) -> list[str]:
        """Every registered company, sorted (for impact reports over the whole store)."""
        return [row[0] for row in self.conn.execute(select(companies.c.siret).order_by(companies.c.siret))]

    def admins(self, siret: str) -> list[str]:
        rows = self.conn.execute(
            select(company_admins.c.user_email)
            .where(company_admins.c.company_siret == siret)
            .order_by(company_admins.c.user_email)
        )
        return [row[0] for row in rows]

    def add_admin(self, siret: str, email: str, now: datetime) -> bool:
        self.ensure_user(email, now)
        if email in self.admins(siret):
            return False
        self._touched(company=siret, user=email)
        self.conn.execute(insert(company_admins).values(company_siret=siret, user_email=email, created_at=now))
        return True

    def remove_admin(self, siret: str, email: str) -> None:
        self._touched(company=siret, user=email)
        self.conn.execute(
            sql_delete(company_admins).where(
                company_admins.c.company_siret == siret, company_admins.c.user_email == email
            )
        )

    # ---- delegations ------------------------------------------------------------------

    def insert_delegation(self, **values) -> None:
        self._touched(company=values["company_siret"])
        self.conn.execute(insert(delegations).values(**values))

    def delegation_row(self, delegation_id: str, lock: bool = False):
        query = select(delegations).where(delegations.c.id == delegation_id)
        return self.conn.execute(self._lock(query) if lock else query).first()

    def delegation_by_token(self, token_hash: str, lock: bool = False):
        query = select(delegations).where(delegations.c.token_hash == token_hash)
        return self.conn.execute(self._lock(query) if lock else query).first()

    def delegations_of_company(self, siret: str) -> list:
        return list(
            self.conn.execute(
                select(delegations)
                .where(delegations.c.company_siret == siret)
                .order_by(delegations.c.created_at, delegations.c.id)
            )
        )

    def pending_delegations_for(self, siret: str, manager_email: str, lock: bool = False) -> list:
        query = select(delegations).where(
            delegations.c.company_siret == siret,
            delegations.c.manager_email == manager_email,
            _status_is(delegations.c.status, model.LinkStatus.PENDING),
        )
        return list(self.conn.execute(self._lock(query) if lock else query))

    def active_delegation(self, siret: str, firm_siret: str, lock: bool = False):
        query = select(delegations).where(
            delegations.c.company_siret == siret,
            delegations.c.firm_siret == firm_siret,
            _status_is(delegations.c.status, model.LinkStatus.ACTIVE),
        )
        return self.conn.execute(self._lock(query) if lock else query).first()

    def update_delegation(self, delegation_id: str, **values) -> None:
        changed = update(delegations).where(delegations.c.id == delegation_id).values(**values)
        for row in self.conn.execute(changed.returning(delegations.c.company_siret)):
            self._touched(company=row.company_siret)

    def delegations_of_firm(self, firm_siret: str) -> list:
        return list(
            self.conn.execute(
                select(delegations, companies.c.name)
                .join(companies, companies.c.siret == delegations.c.company_siret)
                .where(
                    delegations.c.firm_siret == firm_siret,
                    _status_is(delegations.c.status, model.LinkStatus.ACTIVE),
                )
                .order_by(delegations.c.company_siret)
            )
        )

    # ---- firms and collaborators ----------------------------------------------------

    def firm_row(self, siret: str, lock: bool = False):
        query = select(firms).where(firms.c.siret == siret)
        return self.conn.execute(self._lock(query) if lock else query).first()

    def insert_firm(self, siret: str, name: str, manager_email: str, now: datetime) -> None:
        self._touched(user=manager_email)
        self.conn.execute(insert(firms).values(siret=siret, name=name, manager_email=manager_email, created_at=now))

    def collaborators(self, firm_siret: str) -> list:
        return list(
            self.conn.execute(
                select(collaborators)
                .where(collaborators.c.firm_siret == firm_siret)
                .order_by(collaborators.c.user_email)
            )
        )

    def is_collaborator(self, firm_siret: str, email: str) -> bool:
        query = select(collaborators.c.user_email).where(
            collaborators.c.firm_siret == firm_siret, collaborators.c.user_email == email
        )
        return self.conn.execute(query).first() is not None

    def add_collaborator(self, firm_siret: str, email: str, now: datetime) -> None:
        self.ensure_user(email, now)
        self._touched(user=email)
        self.conn.execute(insert(collaborators).values(firm_siret=firm_siret, user_email=email, created_at=now))

    def remove_collaborator(self, firm_siret: str, email: str) -> None:
        self._touched(user=email)
        self.conn.execute(
            sql_delete(collaborators).where(
                collaborators.c.firm_siret == firm_siret, collaborators.c.user_email == email
            )
        )

    # ---- grants -----------------------------------------------------------------------

    def insert_grant(self, **values) -> None:
        self._touched(company=values["company_siret"])
        self.conn.execute(insert(grants).values(**values))

    def grant_row(self, grant_id: str, lock: bool = False):
        query = select(grants).where(grants.c.id == grant_id)
        return self.conn.execute(self._lock(query) if lock else query).first()

    def active_grant(self, firm_siret: str, email: str, siret: str):
        return self.conn.execute(
            select(grants).where(
                grants.c.firm_siret == firm_siret,
                grants.c.collaborator_email == email,
                grants.c.company_siret == siret,
                _status_is(grants.c.status, model.LinkStatus.ACTIVE),
            )
        ).first()

    def active_grants_of(self, firm_siret: str, email: str) -> list:
        return list(
            self.conn.execute(
                self._lock(
                    select(grants).where(
                        grants.c.firm_siret == firm_siret,
                        grants.c.collaborator_email == email,
                        _status_is(grants.c.status, model.LinkStatus.ACTIVE),
                    )
                )
            )
        )

    def update_grant(self, grant_id: str, **values) -> None:
        changed = update(grants).where(grants.c.id == grant_id).values(**values)
        for row in self.conn.execute(changed.returning(grants.c.company_siret)):
            self._touched(company=row.company_siret)

    # ---- API keys -----------------------------------------------------------------------

    def insert_api_key(self, name: str, role: str, key_hash: str, now: datetime) -> None:
        self.conn.execute(
            insert(api_keys).values(id=new_id(), name=name, role=role, key_hash=key_hash, created_at=now)
        )
        self.scopes.add(answers.KEYS)
        self.bump_data_version()  # processes that remember keys must look again

    def api_key_by_hash(self, key_hash: str) -> model.ApiKey | None:
        row = self.conn.execute(_API_KEY, {"key_hash": key_hash}).first()
        return None if row is None else model.ApiKey(name=row.name, role=row.role)

    def api_key_names(self) -> set[str]:
        return {row[0] for row in self.conn.execute(select(api_keys.c.name))}

    def revoke_api_key(self, name: str, now: datetime) -> bool:
        result = self.conn.execute(
            update(api_keys).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
        )
        self.scopes.add(answers.KEYS)
        self.bump_data_version()  # a revoked key must fail at once in every process
        return result.rowcount > 0

    def save_policy_snapshot(self, version: str, sources: dict[str, str], now: datetime) -> None:
        """Keep an accepted policy (once per version)."""
        dialect = sqlite_insert if self.is_sqlite else postgresql_insert
        self.conn.execute(dialect(policy_snapshots).values(version=version, sources=sources, accepted_at=now)
                          .on_conflict_do_nothing())

    def latest_policy_snapshot(self) -> dict[str, str] | None:
        row = self.conn.execute(
            select(policy_snapshots.c.sources).order_by(policy_snapshots.c.accepted_at.desc()).limit(1)
        ).first()
        return None if row is None else dict(row[0])

    def claim_policy_event(self, key: str, now: datetime) -> bool:
        """Record a policy event once across processes; False if another got there first."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(insert(policy_events).values(key=key, at=now))
        except IntegrityError:
            return False
        return True

    # ---- impact reports (authz.impact_jobs) -------------------------------------------

    def insert_impact_report(self, values: dict) -> None:
        self.conn.execute(insert(impact_reports).values(**values))

    def impact_report(self, report_id: str) -> dict | None:
        row = self.conn.execute(select(impact_reports).where(impact_reports.c.id == report_id)).first()
        return None if row is None else dict(row._mapping)

    def update_impact_report(self, report_id: str, **values) -> None:
        self.conn.execute(update(impact_reports).where(impact_reports.c.id == report_id).values(**values))

    def impact_reports_running(self, alive_since: datetime) -> int:
        """How many reports are running with a heartbeat at or after ``alive_since``."""
        return self.conn.execute(
            select(func.count()).select_from(impact_reports)
            .where(impact_reports.c.status == "running", impact_reports.c.heartbeat_at >= alive_since)
        ).scalar() or 0

    def purge_impact_reports(self, started_before: datetime) -> None:
        self.conn.execute(sql_delete(impact_reports).where(impact_reports.c.started_at < started_before))

    # ---- audit --------------------------------------------------------------------------

    def append_audit(self, **values) -> None:
        """Record a change, and bump the data version in the same transaction."""
        self.conn.execute(insert(audit_log).values(**values))
        self.bump_data_version()

    def bump_data_version(self) -> None:
        """Count one more change, once per transaction (``write_changes`` names what it
        touched at commit); the row is created if someone removed it."""
        if self.bumped_version:
            return
        self.bumped_version = True
        bump = (update(data_version).where(data_version.c.id == 1).values(version=data_version.c.version + 1)
                .returning(data_version.c.version))
        self.version = self.conn.execute(bump).scalar()
        if self.version is None:
            # Put back at a random version, not at 1: a worker that last saw 1 would keep its
            # old answers. A worker keeps answers across a new version only when it equals the
            # one it saw or lies at most CHANGES_KEPT above it (and the change rows in between
            # are on record): a random 62-bit version does so only by a chance of about
            # 10,000 / 2^62 (2^-48) for each version the worker saw.
            try:
                with self.conn.begin_nested():
                    self.version = secrets.randbits(62)
                    self.conn.execute(insert(data_version).values(id=1, version=self.version))
            except IntegrityError:  # another writer created it meanwhile
                self.version = self.conn.execute(bump).scalar()

    def write_changes(self) -> None:
        """Name what the version this transaction bumped to changed, before it commits: its
        scopes, or everything if no write method named any (a bulk load, say) or too many;
        and drop what versions long past changed."""
        version = self.version
        assert version is not None, "called only after bump_data_version"
        scopes = self.scopes if 0 < len(self.scopes) <= SCOPES_AT_MOST else {answers.EVERYTHING}
        self.conn.execute(insert(data_changes), [{"version": version, "scope": scope} for scope in sorted(scopes)])
        self.conn.execute(sql_delete(data_changes).where(data_changes.c.version <= version - CHANGES_KEPT))

    def changes_between(self, old: int, new: int) -> frozenset[str] | None:
        """The scopes data versions old+1 .. new changed; None if one of them is not on
        record (purged, or the version row was put back at a random version)."""
        if not 0 < new - old <= CHANGES_KEPT:
            return None
        rows = self.conn.execute(select(data_changes.c.version, data_changes.c.scope)
                                 .where(data_changes.c.version > old, data_changes.c.version <= new)).all()
        if len({row.version for row in rows}) != new - old:
            return None
        return frozenset(row.scope for row in rows)

    def data_version(self) -> int | None:
        """The current data version; None if its row is missing (then nothing may be cached)."""
        return self.conn.execute(_DATA_VERSION).scalar()

    def audit(
        self,
        company: str | None,
        user: str | None,
        since: datetime | None,
        after_id: int | None,
        limit: int,
    ) -> list[model.AuditRecord]:
        query = select(audit_log).order_by(audit_log.c.id).limit(limit)
        if company:
            query = query.where(audit_log.c.company_siret == company)
        if user:
            query = query.where((audit_log.c.actor == user) | (audit_log.c.subject_email == user))
        if since:
            query = query.where(audit_log.c.at >= since)
        if after_id is not None:
            query = query.where(audit_log.c.id > after_id)
        return [
            model.AuditRecord(
                id=row.id,
                at=row.at,
                actor=row.actor,
                action=row.action,
                company=row.company_siret,
                firm=row.firm_siret,
                subject=row.subject_email,
                target=row.target_id,
                details=row.details,
                request_id=row.request_id,
            )
            for row in self.conn.execute(query)
        ]


# ---- row -> fact -----------------------------------------------------------------------


def _companies(links: dict[str, tuple[list, list]]) -> dict[str, model.Company]:
    return {
        siret: model.Company(siret=siret, delegations=tuple(found), grants=tuple(granted))
        for siret, (found, granted) in links.items()
    }


def delegation_fact(row) -> model.Delegation:
    return model.Delegation(
        id=row.id,
        company=row.company_siret,
        manager_email=row.manager_email,
        firm=row.firm_siret,
        status=row.status,
        scope=scope_set(row.scope),
        ends_at=model.epoch(row.ends_at),
    )


def grant_fact(row) -> model.Grant:
    return model.Grant(
        id=row.id,
        firm=row.firm_siret,
        collaborator=row.collaborator_email,
        company=row.company_siret,
        status=row.status,
        scope=scope_set(row.scope),
        ends_at=model.epoch(row.ends_at),
    )


def reaching(company: model.Company, user: model.User) -> model.Company:
    """The links of ``company`` a single question by ``user`` is answered from (``DecisionFacts.of``).

    Cached answers must come from the same facts whichever path computed them.
    """
    if not (user.admin_of or user.manages or user.collaborates):
        return model.Company(company.siret)
    firms = user.manages | user.collaborates
    return model.Company(
        company.siret,
        tuple(d for d in company.delegations if d.firm in firms),
        tuple(g for g in company.grants if g.collaborator == user.email),
    )
