"""Every (user, company) pair of the store by shape, kept between impact reports.

An impact report needs the shape (``authz.impact_shapes``) of each of a national
store's two million pairs. Computing them means reading the whole store and running
Python on every pair: about a minute, whatever the draft. The shapes depend on the
data, not on the draft, so the census keeps them in a file between reports and, at
the next report, recomputes only the companies that may have changed since:

* the companies and people named by an audit record written since (every change
  writes one in its own transaction): the company itself, and the companies a named
  person reaches (their memberships are part of every shape they are in);
* the companies with a link whose end date lies between the census's instant and
  the report's (a shape keeps the order of end dates and ``now``, so it can only
  change when ``now`` passes an end date of the pair's links).

Audit ids are not committed in order (two transactions may commit out of sequence),
so the audit records of the last ``REREAD_SECONDS`` are read again at each refresh
and those already applied are skipped by id. The census is built again from scratch
after a record that names no company and no person (a bulk load), for a different
database behind the same URL, a store emptied or restored to an earlier state (its
data version went back, or the last audit record seen is gone), other code, a file
older than ``MAX_AGE_SECONDS``, and a file that is unreadable or that others could
have written.
The tests compare a refreshed census with one built from scratch after random
changes and time travel (``tests/property/test_census.py``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import pickle
import tempfile
import time
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, text, union

from authz import impact_shapes, model, pairs, store
from authz.impact_shapes import Shape
from authz.store import Database, Tx, reaching
from authz.tables import audit_log, delegations, grants

log = logging.getLogger(__name__)

FOLDER_VARIABLE = "AUTHZ_CACHE_DIR"  # "off": no census, every report reads the whole store
REREAD_SECONDS = 3600.0
MAX_AGE_SECONDS = 86400.0
ANSWERS_KEPT_SECONDS = 7 * 86400.0


@functools.cache
def _code() -> str:
    """The code whose output the census stores: another version of it means another census."""
    return hashlib.sha256(b"".join(
        Path(module.__file__).read_bytes() for module in (impact_shapes, pairs, store)  # type: ignore[arg-type]
    ) + Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass
class Census:
    """The pairs of every company that has any, each with the number of its shape.

    Flat arrays rather than a tuple per company: a national census then loads from its
    file in a tenth of a second instead of two seconds (a few objects, not 500,000).
    Company ``sirets[i]`` holds the pairs ``offsets[i]`` to ``offsets[i + 1]``, in order
    of e-mail: person ``emails[people[k]]``, shape ``numbers[k]``.
    """

    identity: tuple  # the database (and the code) the census was taken of
    now: float  # the shapes are those at this instant (see the module docstring)
    built: float  # when it was last built from scratch
    reread_from: datetime  # audit records at or after this instant are read again
    applied: set[int]  # ids of those already applied
    landmark: tuple  # the data version and the last audit record: a store restored or emptied loses them
    sirets: list[str] = field(default_factory=list)  # in order
    offsets: array = field(default_factory=lambda: array("i", [0]))
    people: array = field(default_factory=lambda: array("i"))
    numbers: array = field(default_factory=lambda: array("i"))
    emails: list[str] = field(default_factory=list)
    shapes: list[Shape] = field(default_factory=list)
    examples: list[tuple] = field(default_factory=list)  # one pair per shape, as plain tuples (``example``)
    _numbers: dict[Shape, int] = field(default_factory=dict)
    _emails: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.numbers)

    def companies(self) -> Iterator[tuple[str, list[str], array]]:
        """Each company in order, with its people's e-mails and their pairs' shape numbers."""
        emails, people, numbers, offsets = self.emails, self.people, self.numbers, self.offsets
        for i, siret in enumerate(self.sirets):
            start, end = offsets[i], offsets[i + 1]
            yield siret, [emails[person] for person in people[start:end]], numbers[start:end]

    def take(self, population: pairs.Population) -> None:
        """Set the pairs of the companies of ``population`` (a company without people is dropped)."""
        users = population.users
        taken: dict[str, tuple[array, array]] = {}
        for siret, emails in population.people.items():
            if emails:
                company = population.companies[siret]
                taken[siret] = (array("i", [self._email(email) for email in emails]),
                                array("i", [self._number(users[email], company) for email in emails]))
        kept = [(i, siret) for i, siret in enumerate(self.sirets) if siret not in population.people]
        sirets: list[str] = []
        offsets, people, numbers = array("i", [0]), array("i"), array("i")
        old = self.offsets
        for siret, i in sorted([(siret, i) for i, siret in kept] + [(siret, -1) for siret in taken]):
            if i < 0:  # read again
                its_people, its_numbers = taken[siret]
            else:  # kept as it was
                its_people, its_numbers = self.people[old[i]:old[i + 1]], self.numbers[old[i]:old[i + 1]]
            sirets.append(siret)
            people.extend(its_people)
            numbers.extend(its_numbers)
            offsets.append(len(people))
        self.sirets, self.offsets, self.people, self.numbers = sirets, offsets, people, numbers

    def _email(self, email: str) -> int:
        if not self._emails and self.emails:
            self._emails = {email: index for index, email in enumerate(self.emails)}
        index = self._emails.get(email)
        if index is None:
            index = self._emails[email] = len(self.emails)
            self.emails.append(email)
        return index

    def _number(self, user: model.User, company: model.Company) -> int:
        key = impact_shapes.shape(user, company)
        number = self._numbers.get(key)
        if number is None:
            number = self._numbers[key] = len(self.shapes)
            self.shapes.append(key)
            self.examples.append(_plain(user, reaching(company, user)))
        return number

    def example(self, number: int) -> tuple[model.User, model.Company]:
        """The facts of one pair of shape ``number``, as a decision loads them.

        Kept as plain tuples and built when asked: pickling slotted dataclasses goes
        through Python code, and a report from a census asks few shapes anew.
        """
        return _facts(*self.examples[number])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_numbers"], state["_emails"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._numbers = {key: number for number, key in enumerate(self.shapes)}
        self._emails = {}  # built when a refresh first needs it


def _plain(user: model.User, company: model.Company) -> tuple:
    return (
        (user.email, user.now, user.admin_of, user.manages, user.collaborates),
        (company.siret, tuple(_fields(d) for d in company.delegations),
         tuple(_fields(g) for g in company.grants)),
    )


def _fields(link: model.Delegation | model.Grant) -> tuple:
    return tuple(getattr(link, name) for name in link.__slots__)


def _facts(user: tuple, company: tuple) -> tuple[model.User, model.Company]:
    siret, delegations, grants = company
    return model.User(*user), model.Company(
        siret, tuple(model.Delegation(*d) for d in delegations), tuple(model.Grant(*g) for g in grants))


def folder(env: Mapping[str, str] | None = None) -> Path | None:
    """Where census files are kept, from ``AUTHZ_CACHE_DIR`` (None: nowhere, no census)."""
    env = os.environ if env is None else env
    raw = env.get(FOLDER_VARIABLE)
    if raw == "off":
        return None
    if raw:
        return Path(raw)
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "authz"
    home = Path("~").expanduser()
    # A user without a home (some containers) keeps no census unless given a folder.
    return None if home == Path("~") else home / ".cache" / "authz"


def current(db: Database, now: float, place: Path, rebuild: bool = False) -> tuple[Census, str] | None:
    """The census of ``db`` at ``now`` kept in folder ``place``, and how it was obtained.

    Read from its file and refreshed, or built from scratch (always, with ``rebuild``);
    the result is saved back. None: the database has no lasting identity (SQLite in memory).
    """
    with db.transaction(write=False) as tx:
        identity = _identity(db, tx)
    if identity is None:
        return None
    # Named after the database alone: a census of other code replaces it, never sits beside it.
    path = place / f"census-{hashlib.sha256(repr(identity[:-1]).encode()).hexdigest()[:24]}.pickle"
    census = None if rebuild else _read(path, identity)
    if census is not None and time.time() - census.built <= MAX_AGE_SECONDS:
        changed = refresh(db, census, now)
        if changed is not None:
            if changed:
                _write(path, census)
            return census, "census refreshed"
    census = build(db, identity, now)
    _write(path, census)
    _prune(place, "census-*.pickle", MAX_AGE_SECONDS)  # of databases no report has asked about since
    return census, "census built from the whole store"


def build(db: Database, identity: tuple, now: float) -> Census:
    """A census of every company, reading the whole store."""
    with db.transaction(write=False) as tx:
        # The mark is taken before the pairs are read: a change committed meanwhile is
        # applied again at the next refresh, which is harmless.
        reread_from, applied = _mark(tx, now)
        landmark = _landmark(tx)
        population = pairs.load_all(tx, now)
    census = Census(identity, now, time.time(), reread_from, applied, landmark)
    census.take(population)
    return census


def refresh(db: Database, census: Census, now: float) -> bool | None:
    """Bring ``census`` to ``now`` and to the store's present state.

    Returns whether any company was read again (None: the census must be built again).
    Unchanged, the census's own marks stay as they were: still right, if older.
    """
    with db.transaction(write=False) as tx:
        if not _still_there(tx, census.landmark):
            return None
        landmark = _landmark(tx)
        records = tx.conn.execute(
            select(audit_log.c.id, audit_log.c.at, audit_log.c.company_siret, audit_log.c.subject_email)
            .where(audit_log.c.at >= census.reread_from)
        ).all()
        fresh = [record for record in records if record.id not in census.applied]
        if any(record.company_siret is None and record.subject_email is None for record in fresh):
            return None  # a change the census cannot place (no audited use case writes one today)
        changed = _changed_companies(tx, fresh, min(now, census.now), max(now, census.now))
        if not changed:
            return False
        census.take(pairs.load_some(tx, sorted(changed), now))
    census.now, census.landmark = now, landmark
    census.reread_from = _reread_from(now)
    census.applied = {record.id for record in records if record.at >= census.reread_from}
    return True


def _changed_companies(tx: Tx, records: list, earliest: float, latest: float) -> set[str]:
    found: set[str] = {record.company_siret for record in records if record.company_siret}
    people = {record.subject_email for record in records if record.subject_email}
    if people:
        for user in tx.users_facts(sorted(people), earliest).values():
            found.update(tx.companies_reaching(user))
    # A second either side: end dates and instants are rounded differently in the store.
    lo, hi = (datetime.fromtimestamp(moment, UTC) for moment in (earliest - 1.0, latest + 1.0))
    ending = union(
        select(delegations.c.company_siret).where(
            delegations.c.firm_siret.is_not(None), delegations.c.ends_at >= lo, delegations.c.ends_at <= hi),
        select(grants.c.company_siret).where(grants.c.ends_at >= lo, grants.c.ends_at <= hi),
    )
    found.update(row[0] for row in tx.conn.execute(ending))
    return found


def _reread_from(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC) - timedelta(seconds=REREAD_SECONDS)


def _mark(tx: Tx, now: float) -> tuple[datetime, set[int]]:
    """Where the next refresh starts reading the audit log, and the records it may skip."""
    since = _reread_from(now)
    return since, {row[0] for row in tx.conn.execute(select(audit_log.c.id).where(audit_log.c.at >= since))}


def _landmark(tx: Tx) -> tuple:
    last = tx.conn.execute(select(audit_log.c.id, audit_log.c.at).order_by(audit_log.c.id.desc()).limit(1)).first()
    return tx.data_version(), None if last is None else (last.id, last.at)


def _still_there(tx: Tx, landmark: tuple) -> bool:
    """Whether the store still holds what it held at ``landmark``, and no less (else: rebuild)."""
    version, last = landmark
    now_version = tx.data_version()
    if version is not None and (now_version is None or now_version < version):
        return False
    if last is None:
        return True
    found = tx.conn.execute(select(audit_log.c.at).where(audit_log.c.id == last[0])).scalar()
    return found == last[1]


def _identity(db: Database, tx: Tx) -> tuple | None:
    """What tells this database from another behind the same URL (None: no lasting identity)."""
    url = db.engine.url
    if db.is_sqlite:
        if not url.database or url.database == ":memory:":
            return None
        stat = os.stat(url.database)
        where: tuple = ("sqlite", os.path.abspath(url.database), stat.st_dev, stat.st_ino)
    else:
        oid = tx.conn.execute(text("SELECT oid FROM pg_database WHERE datname = current_database()")).scalar()
        where = (url.get_backend_name(), url.host, url.port, url.database, oid)
    return (*where, _code())


def _read(path: Path, identity: tuple) -> Census | None:
    census = _load(path)
    return census if isinstance(census, Census) and census.identity == identity else None


def recall(place: Path, version: str) -> dict[str, dict]:
    """The answers policy ``version`` gave in earlier impact reports (``remember``), or {}.

    A shape's rights, and a question (a right, a shape's skeleton, whether each scope
    holds the right), have the same answer under the same policy whatever the data, so
    they are kept apart from any census: one file per policy version and version of
    the shapes' code.
    """
    answers = _load(_answers_file(place, version))
    return answers if isinstance(answers, dict) and set(answers) == {"shapes", "questions"} else {}


def _load(path: Path) -> object | None:
    """A file this process's user wrote and no one else could have (None: missing or not trusted)."""
    try:
        with path.open("rb") as source:
            stat = os.fstat(source.fileno())
            if stat.st_uid != os.getuid() or stat.st_mode & 0o022:
                log.warning("impact census file %s is not this user's own: ignored", path)
                return None
            return pickle.load(source)
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a damaged or outdated file costs work done again, never trust
        log.warning("impact census file %s unreadable: its work is done again", path)
        return None


def remember(place: Path, version: str, answers: dict[str, dict]) -> None:
    _write(_answers_file(place, version), answers)
    _prune(place, "answers-*.pickle", ANSWERS_KEPT_SECONDS)  # of policies no report has asked about since


def _prune(place: Path, pattern: str, seconds: float) -> None:
    """Remove the files of ``place`` matching ``pattern`` not written for ``seconds``.

    A census file that old is of no use: its census was built longer ago than
    ``MAX_AGE_SECONDS``, so it would be built again anyway.
    """
    for old in place.glob(pattern):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > seconds:
                old.unlink()


def _answers_file(place: Path, version: str) -> Path:
    return place / f"answers-{hashlib.sha256(f'{version} {_code()}'.encode()).hexdigest()[:24]}.pickle"


def _write(path: Path, content: object) -> None:
    """Replace the file at once, so that a concurrent reader sees the old or the new content."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".census-", delete=False) as target:
            pickle.dump(content, target, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(target.name, path)
    except OSError as exc:
        log.warning("impact census file %s not saved (%s): the next report does more work", path.name, exc)
