"""Run the decision tables policy admins keep beside the policy (``policies/tests/*.yaml``).

A table describes a small world and the answers expected in it::

    name: the collaborator holds what the firm holds       # one table per YAML document
    now: 2026-03-02T09:00:00Z                              # optional, RFC 3339
    people: {alice: alice@dupont.example, bruno: ..., chloe: ...}
    companies: {dupont: {siret: "73214568900012", admins: [alice]}}
    firms: {legrand: {siret: "44809123700017", manager: bruno, collaborators: [chloe]}}
    delegations:    # status: pending | active | revoked; ends_at: RFC 3339 or +1d, -1h ...
      dupont-legrand: {company: dupont, firm: legrand, status: active, scope: [compte]}
    grants:         # status: active | revoked
      chloe-dupont: {firm: legrand, collaborator: chloe, company: dupont, status: active, scope: [compte]}
    expect:         # who/on: a fixture name, or an unknown e-mail / SIRET; why: optional note
      - {who: chloe, on: dupont, allow: [compte], deny: [entreprise], why: ...}
    searches:
      - {resources: {who: bruno, right: compte}, expect: [dupont]}
      - {subjects: {on: dupont, right: compte}, expect: [alice, bruno, chloe]}
      - {actions: {who: chloe, on: dupont}, expect: [compte]}

Its rows go straight into a fresh SQLite database, so a table can state a revoked
or lapsed link as it is; every question then goes through ``Decisions``, the
service's own path. A table thus pins the policy and the facts the store hands it.
"""

from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import yaml
from sqlalchemy import insert

from authz import tables as t
from authz.decisions import Decisions
from authz.engine import Engine
from authz.errors import Conflict, PolicyError
from authz.identifiers import is_email, is_siret, normalize_email
from authz.store import Database, join_scope

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "policies" / "tests"
# Tables run at a fixed instant unless they say otherwise, so "+1d" means the same
# thing on every run.
DEFAULT_NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_SHIFT = re.compile(r"([+-])(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TABLE_KEYS = ("now", "people", "companies", "firms", "delegations", "grants", "expect", "searches")
# search -> (what it asks, how a case reads)
_SEARCHES = {
    "resources": (("who", "right"), "companies where {who} holds {right}"),
    "subjects": (("on", "right"), "who holds {right} on {on}"),
    "actions": (("who", "on"), "rights of {who} on {on}"),
}


class TableError(Exception):
    """A table an admin must fix; the message says where and what."""


class _Loader(yaml.SafeLoader):
    """A SafeLoader reading plain scalars as text and refusing duplicate keys.

    YAML 1.1 would read the key ``on`` as True, a SIRET as a number (octal when it
    starts with 0), and silently keep the last of two equal keys.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key in (key for key, _ in node.value if isinstance(key, yaml.ScalarNode)):
            if key.value in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key.value!r}", key.start_mark)
            seen.add(key.value)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class CaseResult:
    label: str
    expected: str
    actual: str
    passed: bool
    reason: str | None = None  # the decision's reason code (decisions only)
    why: str | None = None  # the admin's note, shown when the case fails


@dataclass
class TableResult:
    file: str
    name: str
    cases: list[CaseResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(case.passed for case in self.cases)


@dataclass(frozen=True)
class Failure:
    """One line to fix: a failed case or a table that could not run."""

    file: str
    table: str
    message: str


@dataclass
class PolicyTestReport:
    """Every table's result, with the counts a summary line needs."""

    tables: list[TableResult]

    def __post_init__(self):
        self.cases = [case for table in self.tables for case in table.cases]
        self.passed = sum(case.passed for case in self.cases)
        self.failed = len(self.cases) - self.passed
        self.errors = [table for table in self.tables if table.error]
        self.ok = bool(self.tables) and all(table.ok for table in self.tables)
        self.failures = [Failure(table.file, table.name, table.error or "") for table in self.errors] + [
            Failure(table.file, table.name, f"{table.name}: {case.label}: expected {case.expected}, got {case.actual}")
            for table in self.tables for case in table.cases if not case.passed
        ]


@dataclass(frozen=True)
class Table:
    """One YAML document as read; it is checked when run."""

    file: str
    name: str
    spec: object
    error: str | None = None


def load_tables(folder: Path = DEFAULT_FOLDER) -> list[Table]:
    """Read every ``*.yaml`` under ``folder``; a file may hold several tables (``---``)."""
    folder = Path(folder)
    paths = sorted(folder.rglob("*.yaml")) if folder.is_dir() else []
    if not paths:  # finding nothing must not read as "all passed"
        return [Table(str(folder), "-", None, f"no *.yaml decision tables under {folder}")]
    found = []
    for path in paths:
        file = path.relative_to(folder).as_posix()
        try:
            with path.open(encoding="utf-8") as stream:
                documents = [doc for doc in yaml.load_all(stream, Loader=_Loader) if doc is not None]
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            found.append(Table(file, "-", None, f"{file}: not valid YAML: {exc}"))
            continue
        found += [] if documents else [Table(file, "-", None, f"{file}: the file holds no table")]
        for index, spec in enumerate(documents, 1):
            name = spec.get("name") if isinstance(spec, dict) else None
            found.append(Table(file, name if isinstance(name, str) else f"table {index}", spec))
    return found


def _fields(where: str, value: object, required: tuple = (), optional: tuple = ()) -> dict:
    """Return ``value`` as a mapping holding only the allowed keys, or say what is wrong."""
    allowed = ", ".join((*required, *optional))
    if not isinstance(value, dict):
        raise TableError(f"{where}: expected a mapping with keys {allowed}")
    for key in value:
        if key not in required and key not in optional:
            raise TableError(f"{where}: unknown key {key!r} (allowed: {allowed})")
    for key in required:
        if value.get(key) is None:
            raise TableError(f"{where}: {key!r} is missing")
    return value


def _named(where: str, value: object) -> dict:
    if value is not None and not isinstance(value, dict):
        raise TableError(f"{where}: expected a mapping of names")
    return value or {}


def _words(where: str, value: object) -> list[str]:
    if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise TableError(f"{where}: expected a list of names, like [declarations, compte]")
    if any(len(v.split()) != 1 for v in value or ()):  # scopes are stored space-separated
        raise TableError(f"{where}: a name must be one word")
    return value or []


def _instant(where: str, value: object, now: datetime) -> datetime:
    """Read RFC 3339 with a time zone, or a shift from ``now`` such as "+1d" or "-1h"."""
    shift = _SHIFT.fullmatch(str(value).strip())
    if shift:
        sign, amount, unit = shift.groups()
        return now + (1 if sign == "+" else -1) * timedelta(**{_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(str(value).strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise TableError(f"{where}: {value!r} is neither RFC 3339 with a time zone nor a shift like +1d or -1h")
    return moment.astimezone(UTC)


def _lookup(where: str, name: object, known: dict, kind: str):
    if isinstance(name, str) and name in known:
        return known[name]
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    raise TableError(f"{where}: {name!r} is not in {kind}" + (f" (did you mean {close[0]!r}?)" if close else ""))


class _World:
    """A table's fixtures as rows, and its questions; every name is resolved up front."""

    def __init__(self, spec: object):
        spec = _fields("table", spec, ("name",), _TABLE_KEYS)
        self.now = _instant("now", spec["now"], DEFAULT_NOW) if spec.get("now") else DEFAULT_NOW
        self.people: dict[str, str] = {}
        self.companies: dict[str, str] = {}
        self.firms: dict[str, str] = {}
        self.managers: dict[str, str] = {}
        self.rows: list[tuple] = []  # (table, values) in an order every foreign key accepts
        for name, email in _named("people", spec.get("people")).items():
            self.people[name] = self._email(f"people.{name}", email)
            self.rows.append((t.users, {"email": self.people[name]}))
        for name, value in _named("companies", spec.get("companies")).items():
            self._company(f"companies.{name}", name, _fields(f"companies.{name}", value, ("siret",), ("admins",)))
        for name, value in _named("firms", spec.get("firms")).items():
            self._firm(f"firms.{name}", name, _fields(f"firms.{name}", value, ("siret", "manager"), ("collaborators",)))
        for kind in ("delegations", "grants"):
            for name, value in _named(kind, spec.get(kind)).items():
                self._link(kind, name, value)
        self.names = {v: k for k, v in (*self.people.items(), *self.companies.items())}
        expect, searches = spec.get("expect") or [], spec.get("searches") or []
        if not isinstance(expect, list) or not isinstance(searches, list):
            raise TableError("expect and searches must be lists of rows (each row starts with -)")
        self.questions = [q for i, row in enumerate(expect, 1) for q in self._expect(f"expect[{i}]", row)]
        self.questions += [self._search(f"searches[{i}]", item) for i, item in enumerate(searches, 1)]
        if not self.questions:
            raise TableError("the table asks nothing: add rows under expect or searches")

    def _email(self, where: str, value: object) -> str:
        if not isinstance(value, str) or not is_email(value):
            raise TableError(f"{where}: {value!r} is not an e-mail address")
        if normalize_email(value) in self.people.values():
            raise TableError(f"{where}: {value!r} is already someone else's e-mail")
        return normalize_email(value)

    @staticmethod
    def _siret(where: str, value: object, taken: dict) -> str:
        if not isinstance(value, str) or not is_siret(value):
            raise TableError(f"{where}: {value!r} is not a SIRET (14 digits with a valid Luhn check digit)")
        if value in taken.values():
            raise TableError(f"{where}: SIRET {value} is used twice")
        return value

    def _person(self, where: str, name: object) -> str:
        return _lookup(where, name, self.people, "people")

    def _company(self, where: str, name: str, value: dict) -> None:
        self.companies[name] = siret = self._siret(f"{where}.siret", value["siret"], self.companies)
        self.rows.append((t.companies, {"siret": siret, "name": name}))
        for who in _words(f"{where}.admins", value.get("admins")):
            email = self._person(f"{where}.admins", who)
            self.rows.append((t.company_admins, {"company_siret": siret, "user_email": email}))

    def _firm(self, where: str, name: str, value: dict) -> None:
        self.firms[name] = siret = self._siret(f"{where}.siret", value["siret"], self.firms)
        self.managers[siret] = manager = self._person(f"{where}.manager", value["manager"])
        self.rows.append((t.firms, {"siret": siret, "name": name, "manager_email": manager}))
        for who in _words(f"{where}.collaborators", value.get("collaborators")):
            email = self._person(f"{where}.collaborators", who)
            self.rows.append((t.collaborators, {"firm_siret": siret, "user_email": email}))

    def _link(self, kind: str, name: str, value: object) -> None:
        where, grant = f"{kind}.{name}", kind == "grants"
        required = ("company", "firm", "collaborator", "status") if grant else ("company", "firm", "status")
        value = _fields(where, value, required, ("scope", "ends_at"))
        statuses = ("active", "revoked") if grant else ("pending", "active", "revoked")
        if value["status"] not in statuses:
            raise TableError(f"{where}.status: {value['status']!r} is not one of {', '.join(statuses)}")
        firm = _lookup(f"{where}.firm", value["firm"], self.firms, "firms")
        ends = value.get("ends_at")
        row = {
            "id": name, "company_siret": _lookup(f"{where}.company", value["company"], self.companies, "companies"),
            "firm_siret": firm, "status": value["status"], "updated_at": self.now,
            "scope": join_scope(_words(f"{where}.scope", value.get("scope"))),
            "ends_at": None if ends is None else _instant(f"{where}.ends_at", ends, self.now),
        }
        if grant:
            row["collaborator_email"] = self._person(f"{where}.collaborator", value["collaborator"])
        else:
            # A designation names the manager by e-mail; the firm is stored only when
            # the manager activates it, as Management.designate does.
            row.update(manager_email=self.managers[firm], firm_siret=None if value["status"] == "pending" else firm)
        self.rows.append((t.grants if grant else t.delegations, row))

    def _who(self, where: str, value: object) -> str:
        # A raw e-mail stands for someone the fund has never seen (default deny).
        if isinstance(value, str) and value not in self.people and is_email(value):
            return normalize_email(value)
        return self._person(where, value)

    def _on(self, where: str, value: object) -> str:
        # A raw SIRET stands for a company the fund has never seen (default deny).
        if isinstance(value, str) and value not in self.companies and is_siret(value):
            return value
        return _lookup(where, value, self.companies, "companies")

    def _expect(self, where: str, row: object) -> list[tuple]:
        row = _fields(where, row, ("who", "on"), ("allow", "deny", "why"))
        who, on = self._who(f"{where}.who", row["who"]), self._on(f"{where}.on", row["on"])
        allow, deny = _words(f"{where}.allow", row.get("allow")), _words(f"{where}.deny", row.get("deny"))
        if not allow and not deny:
            raise TableError(f"{where}: list rights under allow, deny or both")
        if set(allow) & set(deny):
            raise TableError(f"{where}: {sorted(set(allow) & set(deny))[0]!r} is both allowed and denied")
        return [
            (f"{row['who']}: {right} on {row['on']}", _verdict(expected),
             partial(_decide, who, right, on, expected), row.get("why"))
            for right, expected in [*((r, True) for r in allow), *((r, False) for r in deny)]
        ]

    def _search(self, where: str, item: object) -> tuple:
        kinds = [kind for kind in _SEARCHES if isinstance(item, dict) and kind in item]
        if len(kinds) != 1:
            raise TableError(f"{where}: name exactly one search: {', '.join(_SEARCHES)}")
        kind, (keys, label) = kinds[0], _SEARCHES[kinds[0]]
        item = _fields(where, item, (kind, "expect"), ("why",))
        asked = _fields(f"{where}.{kind}", item[kind], keys)
        expected = _words(f"{where}.expect", item["expect"])
        if kind != "actions":  # the others answer fixtures, so a typo there is an error
            known = (self.companies, "companies") if kind == "resources" else (self.people, "people")
            for name in expected:
                _lookup(f"{where}.expect", name, *known)
        resolve = {"who": self._who, "on": self._on, "right": lambda at, right: _words(at, [right])[0]}
        args = [resolve[key](f"{where}.{kind}.{key}", asked[key]) for key in keys]
        ask = partial(_searching, kind, args, self.names, expected)
        return label.format(**asked), _listing(expected), ask, item.get("why")


def _verdict(allowed: bool) -> str:
    return "allow" if allowed else "deny"


def _listing(names: list[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _decide(email: str, right: str, siret: str, expected: bool, decisions: Decisions):
    decision = decisions.decide(email, right, siret)
    return f"{_verdict(decision.allowed)} ({decision.reason})", decision.allowed == expected, decision.reason


def _searching(kind: str, args: list, names: dict, expected: list[str], decisions: Decisions):
    # Searches answer e-mails and SIRETs where admins wrote names; order means nothing.
    found = [names.get(value, value) for value in getattr(decisions, kind)(*args)]
    return _listing(found if kind == "actions" else sorted(found)), set(found) == set(expected), None


@contextmanager
def _database(world: _World):
    """Yield a fresh in-memory database holding exactly the table's rows."""
    db = Database("sqlite://")
    try:
        db.create_schema()
        try:
            with db.transaction() as tx:
                for table, row in world.rows:
                    tx.conn.execute(insert(table).values(created_at=world.now, **row))
        except Conflict as exc:  # the store reports a unique index's refusal as a Conflict
            cause = getattr(exc.__cause__, "orig", exc.__cause__)
            raise TableError(f"the fixtures break a rule of the database: {cause}") from None
        yield db
    finally:
        db.dispose()


def run_table(engine: Engine, table: Table) -> TableResult:
    """Check one table, load its world, ask every question; report its faults, never raise."""
    result = TableResult(table.file, table.name, error=table.error)
    if table.error:
        return result
    try:
        world = _World(table.spec)
        with _database(world) as db:
            decisions = Decisions(db, lambda: engine, clock=lambda: world.now)
            for label, expected, ask, why in world.questions:
                actual, passed, reason = ask(decisions)
                result.cases.append(CaseResult(label, expected, actual, passed, reason, why))
    except TableError as exc:
        result.error = f"{table.file}: table {table.name!r}: {exc}"
    except PolicyError as exc:
        result.error = f"{table.file}: table {table.name!r}: the policy failed: {exc}"
    return result


def run_policy_tests(engine: Engine, folder: Path = DEFAULT_FOLDER) -> PolicyTestReport:
    """Run every table under ``folder`` against ``engine``."""
    return PolicyTestReport([run_table(engine, table) for table in load_tables(folder)])


def format_report(report: PolicyTestReport, verbose: bool = False) -> str:
    """List tables as PASSED, FAILED or ERROR with their failing cases, then the counts."""
    lines = []
    for table in report.tables:
        title = f"{table.file}::{table.name}"
        if table.error:
            lines += [f"ERROR   {title}", "        " + table.error.replace("\n", "\n        ")]
            continue
        lines.append(f"{'PASSED' if table.ok else 'FAILED'}  {title} ({len(table.cases)} cases)")
        for case in table.cases:
            if verbose or not case.passed:
                mark = "ok  " if case.passed else "FAIL"
                lines.append(f"    {mark}  {case.label}: expected {case.expected}, got {case.actual}")
                lines += [f"          why: {case.why}"] if case.why and not case.passed else []
    counts = [f"{report.passed} passed", f"{report.failed} failed"]
    counts += [f"{len(report.errors)} error" + "s" * (len(report.errors) > 1)] if report.errors else []
    tables = f"{len(report.tables)} table" + "s" * (len(report.tables) > 1)
    return "\n".join([*lines, f"==== {', '.join(counts)} in {tables} ===="])
