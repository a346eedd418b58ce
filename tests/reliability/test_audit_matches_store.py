"""The audit log and the store tell the same story.

A seeded random workload of use cases through ``Management`` (refused ones included:
wrong person, unknown ids, scopes beyond the firm's, used or expired links), with the
clock moving so links expire and end dates pass. For every call:

* a call that changed the store wrote exactly one audit record, with the call's
  request id, actor, time and the use case's action;
* a refused call, or one that changed nothing, wrote no record and changed nothing.

At the end, the counts of records per action equal the counts of successful changing
calls, and replaying the log's details alone rebuilds the store: companies and their
admins, firms and their collaborators, every delegation and grant with its status,
scope and end date. A failure while writing the audit record rolls the change back
(the record is written in the change's own transaction). And the log is append-only
through the API: /v1/audit only answers GET.

AUTHZ_AUDIT_SEEDS (default "1,2") and AUTHZ_AUDIT_STEPS (default 200) size the run.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from authz import tokens
from authz.audit import Context
from authz.errors import AuthzError
from authz.store import Tx
from authz.tables import (
    audit_log,
    collaborators,
    companies,
    company_admins,
    delegations,
    firms,
    grants,
    users,
)
from authz.usecases import Management
from service.app import create_app
from tests.http.conftest import SECRETS
from tests.reliability.test_concurrency import decision_problems, store_problems
from tests.support import Clock, siret

SEEDS = [int(s) for s in os.environ.get("AUTHZ_AUDIT_SEEDS", "1,2").split(",") if s.strip()]
STEPS = int(os.environ.get("AUTHZ_AUDIT_STEPS", "200"))

ACTION_OF = {
    "register_company": "company.register",
    "add_admin": "company.admin_add",
    "remove_admin": "company.admin_remove",
    "designate": "delegation.designate",
    "activate": "delegation.activate",
    "change_delegation": "delegation.change",
    "revoke_delegation": "delegation.revoke",
    "add_collaborator": "firm.collaborator_add",
    "remove_collaborator": "firm.collaborator_remove",
    "grant": "grant.create",
    "change_grant": "grant.change",
    "revoke_grant": "grant.revoke",
}
STATE_TABLES = (companies, users, company_admins, firms, collaborators, delegations, grants)

COMPANIES = [siret(1_1000_0000_0000 + n) for n in range(4)]
FIRMS = [siret(2_1000_0000_0000 + n) for n in range(3)]
MANAGERS = [f"manager{n}@firm{n}.example" for n in range(3)]  # MANAGERS[i] creates FIRMS[i]
ADMINS = [f"admin{n}@company.example" for n in range(5)]
COLLABS = [f"collab{n}@firm.example" for n in range(5)]
STRANGERS = ["eve@nowhere.example"]
PEOPLE = ADMINS + MANAGERS + COLLABS + STRANGERS


# ---- reading the store ------------------------------------------------------------------------------


def snapshot(db) -> dict[str, list[tuple]]:
    """Every row of every table that holds state (not the log, keys or version)."""
    with db.engine.connect() as conn:
        return {table.name: sorted(tuple(str(v) for v in row) for row in conn.execute(select(table)))
                for table in STATE_TABLES}


def records_after(db, last_id: int) -> list:
    with db.engine.connect() as conn:
        return list(conn.execute(select(audit_log).where(audit_log.c.id > last_id).order_by(audit_log.c.id)))


def last_id(db) -> int:
    with db.engine.connect() as conn:
        return max([0, *conn.execute(select(audit_log.c.id)).scalars()])


def rows(db, table) -> list:
    """Every row in creation order (ids are random: a seed must replay the same workload)."""
    with db.engine.connect() as conn:
        first = [table.c.created_at] if "created_at" in table.c else []
        return list(conn.execute(select(table).order_by(*first, *table.primary_key.columns)))


# ---- the random workload -------------------------------------------------------------------------------


class Workload:
    """Pick plausible calls (and wrong ones) from what the store holds now."""

    def __init__(self, db, management: Management, clock: Clock, rng: random.Random):
        self.db, self.m, self.clock, self.rng = db, management, clock, rng
        self.tokens: dict[str, tuple[str, str]] = {}  # token -> (delegation id, designated manager)
        self.rights = sorted(management.policy().rights)
        self.delegable = sorted(management.policy().info.delegable)
        # A scripted start (every company registered, three firms at work), then random calls.
        self.script = [lambda n=n, c=c: ("register_company", None, (c, f"Société {n}", ADMINS[n]), {})
                       for n, c in enumerate(COMPANIES)]
        for n in range(len(FIRMS)):
            self.script += [
                lambda n=n: ("designate", ADMINS[n], (COMPANIES[n], MANAGERS[n], self.delegable[n: n + 4]), {}),
                lambda n=n: ("activate", MANAGERS[n], (self._last_token(MANAGERS[n]), FIRMS[n], f"Cabinet {n}"), {}),
                lambda n=n: ("add_collaborator", MANAGERS[n], (FIRMS[n], COLLABS[n]), {}),
            ]

    def _last_token(self, manager: str) -> str:
        return [t for t, (_, m) in self.tokens.items() if m == manager][-1]

    def _scope(self, base: list[str]) -> list[str]:
        roll = self.rng.random()
        if roll < 0.08:
            return ["not_a_right"]
        if roll < 0.16:
            return ["entreprise", *self.rng.sample(base, 1)]
        return sorted(self.rng.sample(base, self.rng.randint(1, min(4, len(base)))))

    def _ends_at(self) -> datetime | None:
        roll = self.rng.random()
        if roll < 0.6:
            return None
        if roll < 0.7:
            return self.clock() - timedelta(hours=1)  # in the past: refused
        return self.clock() + timedelta(days=self.rng.choice([1, 3, 10, 60]))

    def _who(self, right_one: str | None) -> str:
        return right_one if right_one and self.rng.random() < 0.8 else self.rng.choice(PEOPLE)

    def next_call(self) -> tuple[str, str | None, tuple, dict]:
        """(use case, acting user, positional args, keyword args)."""
        if self.script:
            return self.script.pop(0)()
        rng = self.rng
        admins = rows(self.db, company_admins)
        dels = rows(self.db, delegations)
        grs = rows(self.db, grants)
        members = rows(self.db, collaborators)
        firm_rows = {r.siret: r.manager_email for r in rows(self.db, firms)}
        admin_of = {}
        for row in admins:
            admin_of.setdefault(row.company_siret, []).append(row.user_email)
        registered = sorted(admin_of)
        company = rng.choice(registered) if registered and rng.random() < 0.85 else rng.choice(COMPANIES)
        admin = rng.choice(admin_of.get(company, [None]))
        kind = rng.choices(
            ["register_company", "add_admin", "remove_admin", "designate", "activate", "change_delegation",
             "revoke_delegation", "add_collaborator", "remove_collaborator", "grant", "change_grant",
             "revoke_grant", "read"],
            weights=[3, 3, 2, 7, 8, 4, 2, 5, 2, 12, 6, 3, 3])[0]
        if kind == "register_company":
            return kind, None, (company, f"Société {company[-4:]}", rng.choice(ADMINS)), {}
        if kind == "add_admin":
            return kind, self._who(admin), (company, rng.choice(ADMINS + STRANGERS)), {}
        if kind == "remove_admin":
            return kind, self._who(admin), (company, rng.choice(admin_of.get(company, ADMINS))), {}
        if kind == "designate":
            return kind, self._who(admin), (company, rng.choice(MANAGERS), self._scope(self.delegable)), \
                {"ends_at": self._ends_at()}
        if kind == "activate":
            pending = {r.id for r in dels if r.status == "pending"}
            live = [t for t, (i, _) in self.tokens.items() if i in pending]
            roll = rng.random()
            if live and roll < 0.75:
                token = rng.choice(live)
            elif self.tokens and roll < 0.95:
                token = rng.choice(list(self.tokens))  # used, replaced or expired by now, perhaps
            else:
                token = "not-a-token-" + "x" * 20
            manager = self.tokens[token][1] if token in self.tokens else rng.choice(MANAGERS)
            n = MANAGERS.index(manager)
            firm = FIRMS[n] if rng.random() < 0.9 else rng.choice(FIRMS)
            return kind, self._who(manager), (token, firm, f"Cabinet {n}"), {}
        if kind in ("change_delegation", "revoke_delegation"):
            if not dels:
                return "read", admin, (company,), {}
            row = rng.choice(dels)
            owners = admin_of.get(row.company_siret, [None])
            actor = self._who(rng.choice(owners) if kind == "change_delegation" or rng.random() < 0.6
                              else firm_rows.get(row.firm_siret))
            if kind == "revoke_delegation":
                return kind, actor, (row.id,), {}
            changes = {"scope": self._scope(self.delegable)} if rng.random() < 0.7 else {}
            if rng.random() < 0.4 or not changes:
                moment = self._ends_at()
                changes.update({"ends_at": moment} if moment else {"clear_ends_at": True})
            return kind, actor, (row.id,), changes
        live_firms = sorted({d.firm_siret for d in dels if d.status == "active"})
        firm = rng.choice(live_firms) if live_firms and rng.random() < 0.85 else rng.choice(FIRMS)
        manager = MANAGERS[FIRMS.index(firm)]
        held = {d.company_siret: d.scope.split() for d in dels if d.firm_siret == firm and d.status == "active"}
        if kind == "add_collaborator":
            return kind, self._who(manager), (firm, rng.choice(COLLABS)), {}
        if kind == "remove_collaborator":
            mine = [r.user_email for r in members if r.firm_siret == firm] or COLLABS
            return kind, self._who(manager), (firm, rng.choice(mine)), {}
        if kind == "grant":
            mine = [r.user_email for r in members if r.firm_siret == firm] or COLLABS
            target = rng.choice(sorted(held)) if held and rng.random() < 0.85 else company
            scope = self._scope(held[target] if target in held and rng.random() < 0.8 else self.rights)
            return kind, self._who(manager), (firm, rng.choice(mine), target, scope), {"ends_at": self._ends_at()}
        if kind in ("change_grant", "revoke_grant"):
            if not grs:
                return "read", admin, (company,), {}
            row = rng.choice(grs)
            actor = self._who(firm_rows.get(row.firm_siret))
            if kind == "revoke_grant":
                return kind, actor, (row.id,), {}
            firm_scope = [d.scope.split() for d in dels if d.firm_siret == row.firm_siret
                          and d.company_siret == row.company_siret and d.status == "active"]
            base = firm_scope[0] if firm_scope and rng.random() < 0.8 else self.rights
            changes = {"scope": self._scope(base)} if rng.random() < 0.7 else {}
            if rng.random() < 0.4 or not changes:
                moment = self._ends_at()
                changes.update({"ends_at": moment} if moment else {"clear_ends_at": True})
            return kind, actor, (row.id,), changes
        return "read", admin, (company,), {}

    def call(self, kind: str, user: str | None, args: tuple, kwargs: dict, request_id: str):
        ctx = Context(user=user, key="audit-test", request_id=request_id)
        m = self.m
        if kind == "read":
            # Reads of every kind: none may write anything.
            company = args[0]
            m.get_company(ctx, company)
            m.list_delegations(ctx, company)
            return None
        if kind == "register_company":
            return m.register_company(Context(key="audit-test", request_id=request_id), *args)
        result = getattr(m, kind)(ctx, *args, **kwargs)
        if kind == "designate":
            self.tokens[result.activation.token] = (result.delegation.id, args[1])
        return result


# ---- replaying the log ------------------------------------------------------------------------------------


def replay(records) -> tuple[dict, list[str]]:
    """Rebuild the state from the audit records alone; also note records whose ``before``
    does not match what the log said until then."""
    state: dict = {"companies": set(), "users": set(), "company_admins": set(), "firms": {},
                   "collaborators": set(), "delegations": {}, "grants": {}}
    problems = []

    def link_state(link: dict) -> dict:
        return {"scope": sorted(link["scope"]), "ends_at": _instant(link["ends_at"])}

    def firm_held(company: str, firm: str, at: datetime) -> set[str]:
        """What the firm held on the company at ``at``, by the log (delegations in force)."""
        return {right for link in state["delegations"].values()
                if link["company"] == company and link["firm"] == firm and link["status"] == "active"
                and (link["ends_at"] is None or link["ends_at"] > at) for right in link["scope"]}

    for rec in records:
        d, action = rec.details, rec.action
        # A grant's scope is written (and checked against the firm's) when it is created or
        # its scope changes; a change of the end date alone keeps the scope as it was.
        if action == "grant.create" or (action == "grant.change" and d["before"]["scope"] != d["after"]["scope"]):
            written = set(d["scope"] if action == "grant.create" else d["after"]["scope"])
            company, firm = rec.company_siret, rec.firm_siret
            held = firm_held(company, firm, rec.at)
            if not written <= held:
                problems.append(f"audit #{rec.id} {action}: wrote {sorted(written - held)}, which firm {firm} "
                                f"did not hold on {company} then ({sorted(held)})")
        if action == "company.register":
            state["companies"].add(rec.company_siret)
            state["users"].add(rec.subject_email)
            state["company_admins"].add((rec.company_siret, rec.subject_email))
        elif action == "company.admin_add":
            state["users"].add(rec.subject_email)
            state["company_admins"].add((rec.company_siret, rec.subject_email))
        elif action == "company.admin_remove":
            state["company_admins"].discard((rec.company_siret, rec.subject_email))
        elif action == "delegation.designate":
            for old in d["replaced"]:
                state["delegations"][old]["status"] = "revoked"
            state["delegations"][rec.target_id] = {
                "company": rec.company_siret, "manager": rec.subject_email, "firm": None, "status": "pending",
                "scope": sorted(d["scope"]), "ends_at": _instant(d["ends_at"])}
        elif action == "delegation.activate":
            if d["lapsed_closed"]:
                state["delegations"][d["lapsed_closed"]]["status"] = "expired"
            if d["firm_created"]:
                state["firms"][rec.firm_siret] = rec.subject_email
                state["users"].add(rec.subject_email)
            state["delegations"][rec.target_id].update(status="active", firm=rec.firm_siret)
        elif action in ("delegation.change", "grant.change"):
            link = state["delegations" if action.startswith("delegation") else "grants"][rec.target_id]
            if link_state(d["before"]) != {"scope": link["scope"], "ends_at": link["ends_at"]}:
                problems.append(f"audit #{rec.id} {action}: before={d['before']} but the log said "
                                f"scope={link['scope']} ends_at={link['ends_at']}")
            link.update(link_state(d["after"]))
        elif action == "delegation.revoke":
            state["delegations"][rec.target_id]["status"] = "revoked"
        elif action == "firm.collaborator_add":
            state["users"].add(rec.subject_email)
            state["collaborators"].add((rec.firm_siret, rec.subject_email))
        elif action == "firm.collaborator_remove":
            state["collaborators"].discard((rec.firm_siret, rec.subject_email))
            for grant_id in d["grants_revoked"]:
                state["grants"][grant_id]["status"] = "revoked"
        elif action == "grant.create":
            if d["lapsed_closed"]:
                state["grants"][d["lapsed_closed"]]["status"] = "expired"
            state["grants"][rec.target_id] = {
                "firm": rec.firm_siret, "collaborator": rec.subject_email, "company": rec.company_siret,
                "status": "active", "scope": sorted(d["scope"]), "ends_at": _instant(d["ends_at"])}
        elif action == "grant.revoke":
            state["grants"][rec.target_id]["status"] = "revoked"
        else:
            problems.append(f"audit #{rec.id}: unknown action {action!r}")
    return state, problems


def _instant(value) -> datetime | None:
    if value is None:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def store_state(db) -> dict:
    """The same shape as ``replay`` builds, read from the tables."""
    return {
        "companies": {r.siret for r in rows(db, companies)},
        "users": {r.email for r in rows(db, users)},
        "company_admins": {(r.company_siret, r.user_email) for r in rows(db, company_admins)},
        "firms": {r.siret: r.manager_email for r in rows(db, firms)},
        "collaborators": {(r.firm_siret, r.user_email) for r in rows(db, collaborators)},
        "delegations": {r.id: {"company": r.company_siret, "manager": r.manager_email, "firm": r.firm_siret,
                               "status": r.status, "scope": r.scope.split(), "ends_at": r.ends_at}
                        for r in rows(db, delegations)},
        "grants": {r.id: {"firm": r.firm_siret, "collaborator": r.collaborator_email, "company": r.company_siret,
                          "status": r.status, "scope": r.scope.split(), "ends_at": r.ends_at}
                   for r in rows(db, grants)},
    }


def differences(replayed: dict, stored: dict) -> list[str]:
    found = []
    for part in stored:
        want, have = replayed[part], stored[part]
        if isinstance(have, dict):
            for key in sorted(set(want) | set(have)):
                if want.get(key) != have.get(key):
                    found.append(f"{part}[{key}]: the log says {want.get(key)}, the store holds {have.get(key)}")
        elif want != have:
            found.append(f"{part}: only in the log {sorted(want - have)}, only in the store {sorted(have - want)}")
    return found


# ---- the tests ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_random_workload_leaves_one_audit_record_per_change_and_the_log_rebuilds_the_store(db, engine, seed):
    clock = Clock()
    management = Management(db, lambda: engine, clock=clock)
    work = Workload(db, management, clock, random.Random(seed))
    calls, changes, refusals, noops = Counter(), Counter(), Counter(), Counter()
    problems: list[str] = []
    for step in range(STEPS):
        clock.advance(seconds=1)  # as in real life, every call happens at its own instant
        if work.rng.random() < 0.08:
            clock.advance(hours=work.rng.choice([1, 30, 24 * 8]))  # 8 days: activation links expire
        kind, user, args, kwargs = work.next_call()
        request_id = f"step-{seed}-{step}"
        before, mark = snapshot(db), last_id(db)
        calls[kind] += 1
        try:
            work.call(kind, user, args, kwargs, request_id)
        except AuthzError as exc:
            refusals[f"{kind}: {type(exc).__name__}({exc.code})"] += 1
            outcome = "refused"
        else:
            outcome = "done"
        after, written = snapshot(db), records_after(db, mark)
        changed = before != after
        where = f"step {step} {kind}{args} as {user} ({outcome})"
        if outcome == "refused" or not changed:
            if changed:
                problems.append(f"{where}: changed the store")
            if written:
                problems.append(f"{where}: wrote {[r.action for r in written]} without a change")
            if outcome == "done":
                noops[kind] += 1
            continue
        changes[ACTION_OF[kind]] += 1
        if len(written) != 1:
            problems.append(f"{where}: changed the store and wrote {len(written)} audit records")
            continue
        record = written[0]
        expected_actor = user if kind != "register_company" else "key:audit-test"
        for name, have, want in [("action", record.action, ACTION_OF[kind]),
                                 ("request id", record.request_id, request_id),
                                 ("actor", record.actor, expected_actor), ("time", record.at, clock())]:
            if have != want:
                problems.append(f"{where}: audit {name} is {have!r}, expected {want!r}")
    logged = Counter(r.action for r in records_after(db, 0))
    if logged != changes:
        problems.append(f"audit records per action {dict(logged)} != successful changes {dict(changes)}")
    replayed, replay_problems = replay(records_after(db, 0))
    problems += replay_problems
    problems += differences(replayed, store_state(db))
    problems += store_problems(db, engine, clock())
    asked, wrong = decision_problems(db, engine, clock)
    problems += wrong
    stored = store_state(db)
    print(f"\n[audit {db.engine.dialect.name} seed {seed}] {STEPS} calls: {sum(changes.values())} changes, "
          f"{sum(refusals.values())} refused, {sum(noops.values())} without change; "
          f"{sum(logged.values())} audit records; final store: {len(stored['delegations'])} delegations "
          f"({sum(d['status'] == 'active' for d in stored['delegations'].values())} active), "
          f"{len(stored['grants'])} grants ({sum(g['status'] == 'active' for g in stored['grants'].values())} active); "
          f"{asked} decisions checked; {len(problems)} problems")
    print(f"    changes per action: {dict(sorted(changes.items()))}")
    print(f"    refusals: {dict(sorted(refusals.items()))}")
    if problems:
        pytest.fail("the audit log and the store disagree:\n  " + "\n  ".join(problems[:30]), pytrace=False)
    assert sum(changes.values()) > STEPS // 5 and sum(refusals.values()) > STEPS // 10, "the workload did too little"


def _fails_after_writing(original):
    def append_then_fail(self, **values):
        original(self, **values)
        raise RuntimeError("the disk is full (simulated, right after the audit insert)")
    return append_then_fail


def test_a_change_whose_audit_record_fails_is_not_stored(db, engine, monkeypatch):
    """The audit record is written in the change's own transaction: when the write fails
    right after the audit insert, neither the record nor the change remains; the same
    call then succeeds normally with exactly one record."""
    clock = Clock()
    m = Management(db, lambda: engine, clock=clock)
    system = Context(key="audit-test", request_id="setup")
    company, firm = COMPANIES[0], FIRMS[0]
    admin, manager, collab = ADMINS[0], MANAGERS[0], COLLABS[0]

    def who(email):
        return Context(user=email, key="audit-test", request_id=f"by-{email}")

    state: dict = {}
    steps = [
        ("register_company", lambda: m.register_company(system, company, "Atomique SA", admin)),
        ("add_admin", lambda: m.add_admin(who(admin), company, ADMINS[1])),
        ("remove_admin", lambda: m.remove_admin(who(admin), company, ADMINS[1])),
        ("designate", lambda: state.update(
            designation=m.designate(who(admin), company, manager, ["compte", "conges"]))),
        ("activate", lambda: state.update(delegation=m.activate(who(manager), state["designation"].activation.token,
                                                                firm, "Cabinet Atome"))),
        ("change_delegation", lambda: m.change_delegation(who(admin), state["delegation"].id, scope=["compte"])),
        ("add_collaborator", lambda: m.add_collaborator(who(manager), firm, collab)),
        ("grant", lambda: state.update(grant=m.grant(who(manager), firm, collab, company, ["compte"]))),
        ("change_grant", lambda: m.change_grant(who(manager), state["grant"].id, ends_at=clock() + timedelta(days=9))),
        ("revoke_grant", lambda: m.revoke_grant(who(manager), state["grant"].id)),
        ("remove_collaborator", lambda: m.remove_collaborator(who(manager), firm, collab)),
        ("revoke_delegation", lambda: m.revoke_delegation(who(admin), state["delegation"].id)),
    ]
    problems = []
    original = Tx.append_audit
    for kind, run in steps:
        before, mark = snapshot(db), last_id(db)
        monkeypatch.setattr(Tx, "append_audit", _fails_after_writing(original))
        try:
            run()
        except RuntimeError:
            pass
        else:
            problems.append(f"{kind}: the simulated failure did not reach the caller")
        monkeypatch.setattr(Tx, "append_audit", original)
        if snapshot(db) != before:
            problems.append(f"{kind}: the change was stored although its audit record failed")
        if records_after(db, mark):
            problems.append(f"{kind}: an audit record remained after the failure")
        run()
        if len(records_after(db, mark)) != 1 or snapshot(db) == before:
            problems.append(f"{kind}: the retried call did not write exactly one record with its change")
    print(f"\n[audit {db.engine.dialect.name}] {len(steps)} use cases failed right after their audit insert: "
          f"{len(problems)} problems")
    assert not problems, problems


def test_the_audit_log_replays_the_firm_a_link_activation_created(db, engine):
    """An activation that creates a firm account stores the firm's name; the audit record
    of that change should say it (the log is the only history of "who did what")."""
    clock = Clock()
    m = Management(db, lambda: engine, clock=clock)
    m.register_company(Context(key="audit-test"), COMPANIES[0], "Société", ADMINS[0])
    designation = m.designate(Context(user=ADMINS[0]), COMPANIES[0], MANAGERS[0], ["compte"])
    m.activate(Context(user=MANAGERS[0]), designation.activation.token, FIRMS[0], "Cabinet Nommé")
    record = records_after(db, 0)[-1]
    print(f"\n[audit {db.engine.dialect.name}] delegation.activate details: {record.details}")
    assert record.action == "delegation.activate" and record.details["firm_created"] is True
    if "Cabinet Nommé" not in {str(v) for v in record.details.values()}:
        pytest.fail("activation created firm "
                    f"{FIRMS[0]} named 'Cabinet Nommé' (stored in firms.name), but its audit record does not "
                    f"say the name: details={record.details}", pytrace=False)


# ---- the log is append-only through the API -------------------------------------------------------------------


@pytest.fixture
def audited_app(db):
    clock = Clock()
    url = db.engine.url.render_as_string(hide_password=False)
    app = create_app({"AUTHZ_DATABASE_URL": url, "TESTING": True, "AUTHZ_GUESS_LIMIT": 0,
                      "AUTHZ_LOG_LEVEL": logging.CRITICAL}, clock=clock)
    with db.transaction() as tx:
        for role, secret in SECRETS.items():
            tx.insert_api_key(f"test-{role}", role, tokens.digest(secret), clock())
    app.extensions["authz"].management.register_company(Context(key="audit-test"), COMPANIES[0], "Société", ADMINS[0])
    yield app
    app.extensions["authz"].db.dispose()


def test_the_audit_log_is_append_only_through_the_api(db, audited_app):
    """The OpenAPI document offers only GET under /v1/audit, the app routes nothing else
    there, and PUT/PATCH/DELETE/POST on /v1/audit answer 405 and change no record."""
    client = audited_app.test_client()
    spec = client.get("/openapi.json").get_json()
    audit_paths = {path: sorted(ops) for path, ops in spec["paths"].items() if path.startswith("/v1/audit")}
    assert audit_paths == {"/v1/audit": ["get"]}, audit_paths
    routes = {(rule.rule, method) for rule in audited_app.url_map.iter_rules() if "audit" in rule.rule
              for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    assert routes == {("/v1/audit", "GET")}, routes
    before = [tuple(r) for r in rows(db, audit_log)]
    assert before, "the fixture should have written a record"
    seen = {}
    for key in ("admin", "portal"):
        headers = {"Authorization": f"Bearer {SECRETS[key]}", "Acting-User": ADMINS[0]}
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            response = client.open("/v1/audit", method=method, headers=headers, json={"records": []})
            seen[(key, method, "/v1/audit")] = response.status_code
            assert response.status_code == 405, (method, response.status_code, response.get_data()[:300])
            assert response.get_json()["error"]["code"] == "method_not_allowed"
            assert "GET" in response.headers.get("Allow", ""), response.headers
            record = before[0][0]
            for path in (f"/v1/audit/{record}", f"/v1/audit?after=0&id={record}"):
                response = client.open(path, method=method, headers=headers)
                seen[(key, method, path.split("?")[0])] = response.status_code
                assert response.status_code in (404, 405), (method, path, response.status_code)
    assert [tuple(r) for r in rows(db, audit_log)] == before, "an audit record changed"
    print(f"\n[audit {db.engine.dialect.name}] writes to the audit log through the API: "
          + ", ".join(f"{m} {p} ({k} key) -> {s}" for (k, m, p), s in sorted(seen.items())))
