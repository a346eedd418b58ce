"""The soak's final check: read the whole state back from the store, compare it with what
the acknowledged writes made, then ask the server every decision of the scenario, and
the searches, and compare each answer with the reference built from the store.

The store is read with plain SQL (table and column names only, nothing of ``authz``),
into the independent model of ``tests/property/reference.py``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import create_engine, text

from tests.e2e.harness import Api
from tests.property.reference import ACTIVE, RIGHTS, RefDelegation, Reference, RefGrant
from tests.reliability.soak_traffic import CHECK_RIGHTS, KEPT, MARGIN, UNKNOWN_COMPANY, now

BATCH = 1000  # AUTHZ_MAX_EVALUATIONS, the default
NOBODY = "nobody@nowhere.soak.example"  # never named anywhere


def _moment(value) -> datetime | None:
    """A stored time: naive UTC (a string on SQLite, a datetime on PostgreSQL)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_store(url: str) -> tuple[Reference, list[str], list[str]]:
    """The whole state of the store as a reference model, with every company and user stored."""
    engine = create_engine(url)
    ref = Reference()
    try:
        with engine.connect() as conn:
            def rows(sql: str) -> list:
                return list(conn.execute(text(sql)))

            companies = sorted(row[0] for row in rows("SELECT siret FROM companies"))
            users = sorted(row[0] for row in rows("SELECT email FROM users"))
            for company in companies:
                ref.admins[company] = set()
            for company, email in rows("SELECT company_siret, user_email FROM company_admins"):
                ref.admins[company].add(email)
            for firm, manager in rows("SELECT siret, manager_email FROM firms"):
                ref.managers[firm] = manager
                ref.collaborators[firm] = set()
            for firm, email in rows("SELECT firm_siret, user_email FROM collaborators"):
                ref.collaborators[firm].add(email)
            for id_, company, manager, firm, status, scope, token_hash, link_expires, ends_at in rows(
                    "SELECT id, company_siret, manager_email, firm_siret, status, scope, token_hash, "
                    "token_expires_at, ends_at FROM delegations"):
                ref.delegations[id_] = RefDelegation(
                    id_, company, manager, frozenset(scope.split()), _moment(ends_at),
                    _moment(link_expires) or datetime.min.replace(tzinfo=UTC), token_hash or "", firm, status)
            for id_, firm, collaborator, company, status, scope, ends_at in rows(
                    "SELECT id, firm_siret, collaborator_email, company_siret, status, scope, ends_at FROM grants"):
                ref.grants[id_] = RefGrant(id_, firm, collaborator, company, frozenset(scope.split()),
                                           _moment(ends_at), status)
    finally:
        engine.dispose()
    return ref, companies, users


def merged(parts: list[Reference]) -> Reference:
    whole = Reference()
    for part in parts:
        whole.admins.update(part.admins)
        whole.managers.update(part.managers)
        whole.collaborators.update(part.collaborators)
        whole.delegations.update(part.delegations)
        whole.grants.update(part.grants)
    return whole


def state_differences(expected: Reference, stored: Reference, at: datetime) -> list[str]:
    """Where the store differs from the acknowledged writes (statuses as a reader sees them at ``at``)."""
    differences = []
    for name in ("admins", "managers", "collaborators"):
        want, got = getattr(expected, name), getattr(stored, name)
        for key in sorted(set(want) | set(got)):
            if want.get(key) != got.get(key):
                differences.append(f"{name}[{key}]: acknowledged {want.get(key)}, stored {got.get(key)}")

    def delegation(d: RefDelegation | None):
        return None if d is None else (d.company, d.manager_email, d.firm, d.shown_status(at), sorted(d.scope), d.ends_at)

    def grant(g: RefGrant | None):
        return None if g is None else (g.firm, g.collaborator, g.company, g.shown_status(at), sorted(g.scope), g.ends_at)

    for name, show in (("delegations", delegation), ("grants", grant)):
        want, got = getattr(expected, name), getattr(stored, name)
        for key in sorted(set(want) | set(got)):
            if show(want.get(key)) != show(got.get(key)):
                differences.append(f"{name}[{key}]: acknowledged {show(want.get(key))}, stored {show(got.get(key))}")
    return differences


def by_company(ref: Reference) -> dict[str, Reference]:
    """The reference split per company, without links that are not stored active (they never
    count: a link holds only while active), so that asking every question stays quick."""
    parts: dict[str, Reference] = {}
    for company, admins in ref.admins.items():
        parts[company] = Reference(admins={company: admins}, managers=ref.managers, collaborators=ref.collaborators)
    for d in ref.delegations.values():
        if d.status == ACTIVE and d.company in parts:
            parts[d.company].delegations[d.id] = d
    for g in ref.grants.values():
        if g.status == ACTIVE and g.company in parts:
            parts[g.company].grants[g.id] = g
    return parts


@dataclass
class Sweep:
    """Every question of the scenario asked once more, after the soak."""

    decisions: int = 0
    allowed: int = 0
    searches: int = 0
    disagreements: int = 0
    ambiguous: int = 0
    errors: int = 0
    texts: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def note(self, text: str, error: bool = False) -> None:
        if error:
            self.errors += 1
        else:
            self.disagreements += 1
        if len(self.texts) < KEPT:
            self.texts.append(text)


def sweep(api: Api, ref: Reference, companies: list[str], users: list[str]) -> Sweep:
    """Ask the server every (user, right, company) of the store (plus an unknown user, right and
    company) and the searches: resources for every (user, right), subjects for every (company,
    right), actions for every (user, company) the user holds something on; compare each answer
    with ``ref`` at the moment it was asked."""
    parts = by_company(ref)
    empty = Reference()
    result = Sweep()
    users = sorted({*users, NOBODY})
    all_companies = [*companies, UNKNOWN_COMPANY]

    def holds(user: str, right: str, company: str, at: datetime) -> bool:
        return parts.get(company, empty).holds(user, right, company, at)

    def ask(path: str, body: dict) -> dict | None:
        try:
            reply = api.post(path, body)
        except Exception as exc:  # noqa: BLE001 - recorded as an error of the check
            result.statuses["no answer"] += 1
            result.note(f"{path}: no answer: {exc}", error=True)
            return None
        result.statuses[str(reply.status)] += 1
        if reply.status != 200 or not isinstance(reply.body, dict):
            result.note(f"{path}: answered {reply.status} {reply.body}", error=True)
            return None
        return reply.body

    triples = [(u, r, c) for u in users for c in all_companies for r in CHECK_RIGHTS]
    for start in range(0, len(triples), BATCH):
        chunk = triples[start:start + BATCH]
        before = now() - MARGIN
        body = ask("/access/v1/evaluations", {"evaluations": [
            {"subject": {"type": "user", "id": u}, "action": {"name": r}, "resource": {"type": "company", "id": c}}
            for u, r, c in chunk]})
        after = now() + MARGIN
        if body is None:
            continue
        answers = [item.get("decision") for item in body.get("evaluations", [])]
        if len(answers) != len(chunk):
            result.note(f"evaluations: {len(answers)} answers to {len(chunk)} questions", error=True)
            continue
        for (u, r, c), got in zip(chunk, answers, strict=True):
            want = holds(u, r, c, before)
            if want != holds(u, r, c, after):
                result.ambiguous += 1
                continue
            result.decisions += 1
            result.allowed += want
            if got is not want:
                result.note(f"decision ({u}, {r}, {c}): service {got}, reference {want}")

    def search(path: str, body: dict, key: str, expected) -> None:
        before = now() - MARGIN
        answer = ask(path, body | {"page": {"limit": 10_000}})
        after = now() + MARGIN
        if answer is None:
            return
        want = expected(before)
        if want != expected(after):
            result.ambiguous += 1
            return
        result.searches += 1
        got = [item[key] for item in answer.get("results", [])]
        if got != want:
            result.note(f"{path} {body}: service {got}, reference {want}")

    moment = now()
    for user in users:
        for right in CHECK_RIGHTS:
            search("/access/v1/search/resource", {"subject": {"type": "user", "id": user}, "action": {"name": right},
                                                  "resource": {"type": "company"}}, "id",
                   lambda at, u=user, r=right: sorted(c for c in companies if holds(u, r, c, at)))
        # The rights of a user on a company: every company where the reference gives the user
        # some right, and the unknown one (the decisions above already cover every triple).
        linked = [c for c in companies if any(holds(user, r, c, moment) for r in RIGHTS)]
        for company in [*linked, UNKNOWN_COMPANY]:
            search("/access/v1/search/action", {"subject": {"type": "user", "id": user},
                                                "resource": {"type": "company", "id": company}}, "name",
                   lambda at, u=user, c=company: [r for r in sorted(RIGHTS) if holds(u, r, c, at)])
    for company in all_companies:
        for right in CHECK_RIGHTS:
            search("/access/v1/search/subject", {"subject": {"type": "user"}, "action": {"name": right},
                                                 "resource": {"type": "company", "id": company}}, "id",
                   lambda at, c=company, r=right: sorted(u for u in users if holds(u, r, c, at)))
    return result
