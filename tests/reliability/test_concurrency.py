"""Conflicting writes at the same time, on PostgreSQL, from many threads and from
several processes (each process builds its own Database and Management on the same
database URL, as gunicorn workers do).

Every scenario runs in rounds: the round's starting state is set up one call at a
time, then all the conflicting calls are released together by a barrier. After each
round and at the end, the rules that must always hold are checked over the WHOLE
store with SQL (``store_problems``), and the answers of ``Decisions`` for every user,
right and company are compared with the rights the rows give along the chain
(``reference_rights``): a collaborator never holds a right the firm does not hold.

Skipped, saying why, when AUTHZ_TEST_POSTGRES_URL is unset: SQLite serialises every
writer, so it would only test the queue.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from sqlalchemy import func, select

from authz.audit import Context
from authz.decisions import Decisions
from authz.engine import Engine
from authz.errors import AuthzError
from authz.store import Database
from authz.tables import (
    audit_log,
    collaborators,
    companies,
    company_admins,
    data_version,
    delegations,
    firms,
    grants,
    metadata,
    users,
)
from authz.tables import utcnow as real_clock
from authz.usecases import Management
from tests.support import ROOT, siret

pytestmark = pytest.mark.postgres

THREADS = int(os.environ.get("AUTHZ_RACE_THREADS", "8"))
PROCESSES = int(os.environ.get("AUTHZ_RACE_PROCESSES", "4"))
ROUNDS = int(os.environ.get("AUTHZ_RACE_ROUNDS", "10"))
SEED = int(os.environ.get("AUTHZ_RACE_SEED", "20260302"))

UNKNOWN_RIGHT = "not_a_right"


# ---- the calls, as picklable tasks ---------------------------------------------------------


def as_user(email: str, tag: str) -> Context:
    return Context(user=email, key="race", request_id=tag)


def perform(m: Management, task: tuple, delay: float = 0.0) -> tuple:
    """Run one task (``(kind, args...)``) after ``delay`` seconds; return ``("ok", value)``,
    ``("refused", ExceptionName, code)`` for a domain refusal, or ``("unexpected", text)``
    for anything else (a database error escaping the use case is a 500 over HTTP)."""
    kind, *args = task
    tag = f"{kind}-{os.getpid()}-{threading.get_ident()}"
    if delay:
        time.sleep(delay)
    try:
        if kind == "noop":
            value = None
        elif kind == "register":
            sir, name, admin = args
            value = m.register_company(Context(key="race", request_id=tag), sir, name, admin).siret
        elif kind == "remove_admin":
            actor, company, email = args
            value = m.remove_admin(as_user(actor, tag), company, email).admins
        elif kind == "designate":
            actor, company, manager, scope = args
            value = m.designate(as_user(actor, tag), company, manager, scope).activation.token
        elif kind == "activate":
            actor, token, firm, firm_name = args
            value = m.activate(as_user(actor, tag), token, firm, firm_name).id
        elif kind == "designate_activate":
            admin, company, manager, scope, firm = args
            token = m.designate(as_user(admin, tag), company, manager, scope).activation.token
            value = m.activate(as_user(manager, tag), token, firm, "Cabinet").id
        elif kind == "revoke_delegation":
            actor, delegation_id = args
            value = m.revoke_delegation(as_user(actor, tag), delegation_id).status
        elif kind == "change_delegation":
            actor, delegation_id, scope = args
            value = m.change_delegation(as_user(actor, tag), delegation_id, scope=scope).scope
        elif kind == "grant_or_change":
            actor, firm, collaborator, company, scope, current = args
            if current is None:
                value = m.grant(as_user(actor, tag), firm, collaborator, company, scope).id
            else:
                value = m.change_grant(as_user(actor, tag), current, scope=scope).id
        else:
            raise AssertionError(f"unknown task {kind}")
    except AuthzError as exc:
        return ("refused", type(exc).__name__, exc.code)
    except Exception as exc:  # noqa: BLE001 - this is what the test looks for
        return ("unexpected", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    return ("ok", value)


def run_threads(m: Management, tasks: list[tuple], delays: list[float] | None = None) -> list[tuple]:
    """Run ``tasks`` at once, one thread each, released together by a barrier (then each
    waits its own ``delays[i]``, a few milliseconds, so that races go both ways)."""
    barrier = threading.Barrier(len(tasks))
    results: list[tuple | None] = [None] * len(tasks)
    delays = delays or [0.0] * len(tasks)

    def work(index: int) -> None:
        barrier.wait()
        results[index] = perform(m, tasks[index], delays[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(tasks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r is not None for r in results), "a racing thread did not finish"
    return results  # type: ignore[return-value]


def _process_main(url: str, barrier, inbox, outbox) -> None:
    """A worker process: its own engine, Database and Management on ``url``."""
    engine = Engine(ROOT)
    database = Database(url)
    management = Management(database, lambda: engine)
    outbox.put(("ready", None))
    try:
        while True:
            item = inbox.get()
            if item is None:
                return
            index, task, delay = item
            try:
                barrier.wait(60)
            except threading.BrokenBarrierError:
                outbox.put((index, ("unexpected", "barrier broken")))
                continue
            outbox.put((index, perform(management, task, delay)))
    finally:
        database.dispose()


class ProcessCrew:
    """``size`` spawned processes that run one task each per round, all at once."""

    def __init__(self, url: str, size: int):
        ctx = multiprocessing.get_context("spawn")
        self.size = size
        self.barrier = ctx.Barrier(size)
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(size)]
        self.processes = [
            ctx.Process(target=_process_main, args=(url, self.barrier, inbox, self.outbox), daemon=True)
            for inbox in self.inboxes
        ]
        for process in self.processes:
            process.start()
        for _ in range(size):
            kind, _ = self.outbox.get(timeout=120)
            assert kind == "ready"

    def run(self, tasks: list[tuple], delays: list[float] | None = None) -> list[tuple]:
        assert len(tasks) <= self.size
        asked = len(tasks)
        delays = (delays or [0.0] * len(tasks)) + [0.0] * (self.size - len(tasks))
        tasks = tasks + [("noop",)] * (self.size - len(tasks))
        for index, (inbox, task) in enumerate(zip(self.inboxes, tasks, strict=True)):
            inbox.put((index, task, delays[index]))
        results: list[tuple | None] = [None] * self.size
        for _ in range(self.size):
            try:
                index, outcome = self.outbox.get(timeout=120)
            except queue.Empty:
                raise AssertionError("a worker process did not answer within 120 s") from None
            results[index] = outcome
        return results[:asked]  # type: ignore[return-value]  # the padding no-ops are not the caller's

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for process in self.processes:
            process.join(30)
            if process.is_alive():
                process.terminate()
                process.join(5)


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def race_engine() -> Engine:
    return Engine(ROOT)


@pytest.fixture
def pg(postgres_url) -> Database:
    """The session's PostgreSQL test database, emptied before and after the test."""
    database = Database(postgres_url, pool_size=THREADS + 2, max_overflow=THREADS)
    _empty(database)
    yield database
    _empty(database)
    database.dispose()


def _empty(database: Database) -> None:
    with database.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        conn.execute(data_version.insert().values(id=1, version=0))


@pytest.fixture
def management(pg, race_engine) -> Management:
    return Management(pg, lambda: race_engine, clock=real_clock)


@pytest.fixture(scope="module")
def crew(postgres_url) -> ProcessCrew:
    """The worker processes, started once for the module (spawning costs seconds)."""
    workers = ProcessCrew(postgres_url, PROCESSES)
    yield workers
    workers.close()


@pytest.fixture(params=["threads", "processes"])
def runner(request, pg, management) -> Callable[..., list[tuple]]:
    """Run a round of conflicting tasks from threads, or from spawned processes."""
    if request.param == "threads":
        return lambda tasks, delays=None: run_threads(management, tasks, delays)
    return request.getfixturevalue("crew").run


def width(runner_name: str) -> int:
    return THREADS if runner_name == "threads" else PROCESSES


# ---- invariants over the whole store -----------------------------------------------------------


def store_problems(db: Database, engine: Engine, now: datetime | None = None) -> list[str]:
    """Check the rules that must always hold over every row; return what breaks."""
    now = now or real_clock()
    problems = []
    rights, delegable = set(engine.rights), set(engine.info.delegable)
    with db.engine.connect() as conn:
        admin_count = dict(conn.execute(
            select(company_admins.c.company_siret, func.count()).group_by(company_admins.c.company_siret)).all())
        for (company,) in conn.execute(select(companies.c.siret)):
            if admin_count.get(company, 0) < 1:
                problems.append(f"company {company} has no admin left")
        pairs = conn.execute(
            select(delegations.c.company_siret, delegations.c.firm_siret, func.count())
            .where(delegations.c.status == "active")
            .group_by(delegations.c.company_siret, delegations.c.firm_siret)
            .having(func.count() > 1)).all()
        problems += [f"{n} active delegations for company {c} and firm {f}" for c, f, n in pairs]
        triples = conn.execute(
            select(grants.c.firm_siret, grants.c.collaborator_email, grants.c.company_siret, func.count())
            .where(grants.c.status == "active")
            .group_by(grants.c.firm_siret, grants.c.collaborator_email, grants.c.company_siret)
            .having(func.count() > 1)).all()
        problems += [f"{n} active grants for {f}/{u}/{c}" for f, u, c, n in triples]
        for row in conn.execute(select(delegations)):
            scope = set(row.scope.split())
            if not scope or not scope <= delegable:
                problems.append(f"delegation {row.id} has scope {sorted(scope)} (delegable: {sorted(delegable)})")
            if row.status == "active" and (row.firm_siret is None or row.activated_at is None):
                problems.append(f"active delegation {row.id} has no firm or no activation time")
            if row.status == "pending" and (row.firm_siret is not None or row.token_hash is None):
                problems.append(f"pending delegation {row.id} has a firm or no token")
            if row.status == "revoked" and row.revoked_at is None:
                problems.append(f"revoked delegation {row.id} has no revocation time")
            if row.status not in ("pending", "active", "revoked", "expired"):
                problems.append(f"delegation {row.id} has status {row.status!r}")
        members = {(r.firm_siret, r.user_email) for r in conn.execute(select(collaborators))}
        firm_rows = {r.siret: r.manager_email for r in conn.execute(select(firms))}
        user_rows = {r.email for r in conn.execute(select(users))}
        for firm, manager in firm_rows.items():
            if manager not in user_rows:
                problems.append(f"firm {firm} is managed by {manager}, who is no user")
        for row in conn.execute(select(grants)):
            scope = set(row.scope.split())
            if not scope or not scope <= rights:
                problems.append(f"grant {row.id} has scope {sorted(scope)}")
            if row.status == "active" and (row.firm_siret, row.collaborator_email) not in members:
                problems.append(f"active grant {row.id} of {row.collaborator_email}, "
                                f"who is no collaborator of {row.firm_siret}")
            if row.status == "revoked" and row.revoked_at is None:
                problems.append(f"revoked grant {row.id} has no revocation time")
        version = conn.execute(select(data_version.c.version).where(data_version.c.id == 1)).scalar()
        records = conn.execute(select(func.count()).select_from(audit_log)).scalar()
        if version != records:
            problems.append(f"data version {version} but {records} audit records (one bump per change)")
    return problems


def _in_force(row, now: datetime) -> bool:
    return row.status == "active" and (row.ends_at is None or row.ends_at > now)


def reference_rights(db: Database, engine: Engine, now: datetime) -> set[tuple[str, str, str]]:
    """(user, right, company) the rows give along the chain, computed without the policy's
    rules: admins hold every right; a manager what the firm's delegation in force gives
    (delegable rights only); a collaborator what their grant in force gives AND the firm holds."""
    delegable = set(engine.info.delegable)
    held: set[tuple[str, str, str]] = set()
    with db.engine.connect() as conn:
        for row in conn.execute(select(company_admins)):
            held |= {(row.user_email, right, row.company_siret) for right in engine.rights}
        firm_holds: set[tuple[str, str, str]] = set()
        for row in conn.execute(select(delegations).where(delegations.c.firm_siret.is_not(None))):
            if _in_force(row, now):
                firm_holds |= {(row.firm_siret, r, row.company_siret) for r in row.scope.split() if r in delegable}
        managers = {r.siret: r.manager_email for r in conn.execute(select(firms))}
        held |= {(managers[f], r, c) for f, r, c in firm_holds}
        members = {(r.firm_siret, r.user_email) for r in conn.execute(select(collaborators))}
        for row in conn.execute(select(grants)):
            if _in_force(row, now) and (row.firm_siret, row.collaborator_email) in members:
                held |= {(row.collaborator_email, r, row.company_siret) for r in row.scope.split()
                         if (row.firm_siret, r, row.company_siret) in firm_holds}
    return held


def decision_problems(
    db: Database, engine: Engine, clock: Callable[[], datetime] = real_clock
) -> tuple[int, list[str]]:
    """Ask Decisions about every user x right x company; compare with the chain.

    Returns (questions asked, problems)."""
    now = clock()
    expected = reference_rights(db, engine, now)
    decisions = Decisions(db, lambda: engine, clock=lambda: now)
    with db.engine.connect() as conn:
        people = sorted({r.email for r in conn.execute(select(users))})
        sirets = sorted({r.siret for r in conn.execute(select(companies))})
        collab_firms: dict[str, set[str]] = {}
        for row in conn.execute(select(collaborators)):
            collab_firms.setdefault(row.user_email, set()).add(row.firm_siret)
        managers = {r.siret: r.manager_email for r in conn.execute(select(firms))}
    questions = [(u, r, c) for u in people for r in (*engine.rights, UNKNOWN_RIGHT) for c in sirets]
    answers = decisions.decide_many(questions)
    problems = []
    for (user, right, company), answer in zip(questions, answers, strict=True):
        if answer.allowed != ((user, right, company) in expected):
            problems.append(f"Decisions says {answer.allowed} ({answer.reason}) for {user} {right} {company}; "
                            f"the rows say {not answer.allowed}")
        firm_holds_it = any((managers[f], right, company) in expected for f in collab_firms.get(user, ()))
        if answer.allowed and answer.reason == "collaborator_grant" and not firm_holds_it:
            problems.append(f"collaborator {user} holds {right} on {company} but none of their firms does")
    return len(questions), problems


def audit_records(db: Database, after_id: int = 0) -> list:
    with db.engine.connect() as conn:
        return list(conn.execute(select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id)))


def last_audit_id(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(audit_log.c.id), 0))).scalar()


@dataclass
class Tally:
    """Outcomes of the racing calls, for the report and the asserts."""

    name: str
    outcomes: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, tasks: list[tuple], results: list[tuple]) -> None:
        for task, result in zip(tasks, results, strict=False):
            if task[0] == "noop":
                continue
            self.outcomes[(task[0], result[0] if result[0] != "refused" else f"{result[1]}:{result[2]}")] += 1
            if result[0] == "unexpected":
                self.unexpected.append(f"{task[0]}{tuple(str(a)[:40] for a in task[1:])} -> {result[1]}")

    def report(self) -> None:
        calls = sum(self.outcomes.values())
        print(f"\n[concurrency] {self.name}: {calls} racing calls, {len(self.unexpected)} unexpected errors, "
              f"{len(self.problems)} invariant problems")
        for (kind, outcome), n in sorted(self.outcomes.items()):
            print(f"    {kind:<20} {outcome:<40} {n}")
        for line in (self.unexpected + self.problems)[:15]:
            print(f"    !! {line}")

    def check(self) -> None:
        self.report()
        if self.unexpected:
            pytest.fail(f"{self.name}: {len(self.unexpected)} calls failed with an error that is no domain refusal "
                        "(a 500 over HTTP):\n  " + "\n  ".join(self.unexpected[:12]), pytrace=False)
        if self.problems:
            pytest.fail(f"{self.name}: invariants broken:\n  " + "\n  ".join(self.problems[:20]), pytrace=False)


# ---- the scenarios -------------------------------------------------------------------------------

SYSTEM = Context(key="race-setup", request_id="setup")


def test_company_revokes_while_the_manager_grants(request, pg, management, race_engine, runner):
    """Round after round, the company revokes (or narrows) the firm's delegation while the
    manager grants on it to every collaborator at once. Afterwards: no collaborator holds
    a right the firm does not (Decisions for every user/right/company), and every grant
    written in a round only names rights the firm held when the round began (nothing
    widens during a round, so that is "held when the grant was written")."""
    mode = request.node.callspec.params["runner"]
    rng = random.Random(SEED)
    m, tally = management, Tally(f"revoke vs grant ({mode})")
    company, firm = siret(3_1000_0000_0001), siret(3_2000_0000_0001)
    admin, manager = "alice@race.example", "bruno@race-firm.example"
    team = [f"collab{i}@race-firm.example" for i in range(max(1, width(mode) - 2))]
    m.register_company(SYSTEM, company, "Race SA", admin)
    delegable = sorted(race_engine.info.delegable)
    rounds_scope: list[tuple[int, int, set[str]]] = []
    for number in range(ROUNDS):
        scope = sorted(rng.sample(delegable, rng.randint(2, len(delegable))))
        if number == 0:
            token = m.designate(as_user(admin, "setup"), company, manager, scope).activation.token
            delegation_id = m.activate(as_user(manager, "setup"), token, firm, "Cabinet Course").id
            for person in team:
                m.add_collaborator(as_user(manager, "setup"), firm, person)
        else:
            token = m.designate(as_user(admin, "setup"), company, manager, scope).activation.token
            delegation_id = m.activate(as_user(manager, "setup"), token, firm, "Cabinet Course").id
        with pg.engine.connect() as conn:
            current = {r.collaborator_email: r.id for r in conn.execute(
                select(grants).where(grants.c.firm_siret == firm, grants.c.status == "active"))}
        # The company revokes (or the firm renounces), the company also narrows, and the
        # manager grants to everyone: a random part of every right, `entreprise` included.
        revoker = admin if number % 3 else manager
        tasks = [("revoke_delegation", revoker, delegation_id),
                 ("change_delegation", admin, delegation_id, scope[: max(1, len(scope) // 2)])]
        for person in team:
            if rng.random() < 0.8:  # within what the firm holds now: only the race can refuse it
                wanted = sorted(rng.sample(scope, rng.randint(1, len(scope))))
            else:  # beyond it (`entreprise` included): always refused
                wanted = sorted(rng.sample([*delegable, "entreprise"], rng.randint(1, 4)))
            tasks.append(("grant_or_change", manager, firm, person, company, wanted, current.get(person)))
        delays = [rng.choice([0.0, 0.001, 0.002, 0.004, 0.008]) for _ in tasks]
        before = last_audit_id(pg)
        results = runner(tasks, delays)
        after = last_audit_id(pg)
        tally.add(tasks, results)
        rounds_scope.append((before, after, set(scope)))
        successes = sum(1 for r in results if r[0] == "ok")
        if after - before != successes:
            tally.problems.append(f"round {number}: {successes} successful changes, {after - before} audit records")
        tally.problems += [f"round {number}: {p}" for p in store_problems(pg, race_engine)]
    # Every grant written in a round names only rights the firm held when the round began.
    for before, after, held in rounds_scope:
        for record in audit_records(pg, before):
            if record.id > after:
                break
            if record.action == "grant.create":
                written = set(record.details["scope"])
            elif record.action == "grant.change":
                written = set(record.details["after"]["scope"])
            else:
                continue
            if not written <= held:
                tally.problems.append(f"{record.action} {record.target_id} wrote {sorted(written - held)}, "
                                      f"which the firm did not hold ({sorted(held)})")
    asked, problems = decision_problems(pg, race_engine)
    tally.problems += problems
    print(f"\n[concurrency] revoke vs grant ({mode}): {asked} decisions compared with the chain")
    tally.check()
    assert tally.outcomes[("revoke_delegation", "ok")] == ROUNDS


def test_two_admins_remove_each_other(request, pg, management, race_engine, runner):
    """Two admins remove each other at once, round after round: the company always keeps
    one admin, and exactly one of the two removals succeeds."""
    mode = request.node.callspec.params["runner"]
    m, tally = management, Tally(f"admins remove each other ({mode})")
    pairs_per_round = max(1, width(mode) // 2)
    for number in range(ROUNDS):
        tasks, companies_of_round = [], []
        for k in range(pairs_per_round):
            company = siret(4_0000_0000_0000 + number * 100 + k)
            first, second = f"a{number}-{k}@admins.example", f"b{number}-{k}@admins.example"
            m.register_company(SYSTEM, company, "Duo SARL", first)
            m.add_admin(as_user(first, "setup"), company, second)
            tasks += [("remove_admin", first, company, second), ("remove_admin", second, company, first)]
            companies_of_round.append(company)
        results = runner(tasks)
        tally.add(tasks, results)
        for k, company in enumerate(companies_of_round):
            pair = results[2 * k: 2 * k + 2]
            if sum(r[0] == "ok" for r in pair) != 1:
                tally.problems.append(f"company {company}: outcomes {pair}, expected exactly one removal")
        tally.problems += [f"round {number}: {p}" for p in store_problems(pg, race_engine)]
    tally.check()


def test_three_admins_remove_each_other_in_a_ring(request, pg, management, race_engine, runner):
    """A removes B, B removes C, C removes A, all at once. The company keeps an admin, and
    every removal in the audit log was made by someone who was still an admin of the
    company at that point of the log (a removed admin's in-flight call must not land)."""
    mode = request.node.callspec.params["runner"]
    m, tally = management, Tally(f"three admins in a ring ({mode})")
    per_round = max(1, width(mode) // 3)
    for number in range(ROUNDS):
        tasks = []
        for k in range(per_round):
            company = siret(4_5000_0000_0000 + number * 100 + k)
            a, b, c = (f"{x}{number}-{k}@ring.example" for x in "abc")
            m.register_company(SYSTEM, company, "Trio SAS", a)
            m.add_admin(as_user(a, "setup"), company, b)
            m.add_admin(as_user(a, "setup"), company, c)
            tasks += [("remove_admin", a, company, b), ("remove_admin", b, company, c),
                      ("remove_admin", c, company, a)]
        tally.add(tasks, runner(tasks))
        tally.problems += [f"round {number}: {p}" for p in store_problems(pg, race_engine)]
    admins: dict[str, set[str]] = {}
    for record in audit_records(pg):
        if record.action == "company.register":
            admins[record.company_siret] = {record.subject_email}
        elif record.action == "company.admin_add":
            admins[record.company_siret].add(record.subject_email)
        elif record.action == "company.admin_remove":
            if record.actor not in admins[record.company_siret]:
                tally.problems.append(
                    f"audit #{record.id}: {record.actor} removed {record.subject_email} from {record.company_siret} "
                    f"after being removed themselves (admins then: {sorted(admins[record.company_siret])})")
            admins[record.company_siret].discard(record.subject_email)
    tally.check()


def test_the_same_activation_link_used_at_once(request, pg, management, race_engine, runner):
    """Every racer follows the same activation link at the same moment: exactly one
    activation succeeds, the others get Gone (token_used) or Conflict, and the company
    and firm end with exactly one active delegation. Odd rounds create the firm, even
    rounds join an existing one."""
    mode = request.node.callspec.params["runner"]
    m, tally = management, Tally(f"same activation link ({mode})")
    company = siret(5_1000_0000_0001)
    admin = "alice@links.example"
    m.register_company(SYSTEM, company, "Liens SA", admin)
    existing_firm, existing_manager = siret(5_2000_0000_0000), "manager@existing.example"
    for number in range(ROUNDS):
        if number % 2:
            firm, manager = siret(5_3000_0000_0000 + number), f"manager{number}@new-firm.example"
        else:
            firm, manager = existing_firm, existing_manager
            with pg.engine.connect() as conn:
                active = conn.execute(select(delegations.c.id).where(
                    delegations.c.firm_siret == firm, delegations.c.status == "active")).scalars().all()
            for delegation_id in active:
                m.revoke_delegation(as_user(admin, "setup"), delegation_id)
        token = m.designate(as_user(admin, "setup"), company, manager, ["compte", "conges"]).activation.token
        before = last_audit_id(pg)
        tasks = [("activate", manager, token, firm, "Cabinet Lien")] * width(mode)
        results = runner(tasks)
        tally.add(tasks, results)
        wins = [r for r in results if r[0] == "ok"]
        losses = [r for r in results if r[0] != "ok"]
        if len(wins) != 1:
            tally.problems.append(f"round {number}: {len(wins)} activations of one link succeeded")
        for loss in losses:
            expected = {("Gone", "token_used"), ("Conflict", "delegation_exists")}
            if loss[0] != "refused" or (loss[1], loss[2]) not in expected:
                tally.problems.append(f"round {number}: a second use of the link gave {loss}")
        with pg.engine.connect() as conn:
            active = conn.execute(select(func.count()).select_from(delegations).where(
                delegations.c.company_siret == company, delegations.c.firm_siret == firm,
                delegations.c.status == "active")).scalar()
        if active != 1:
            tally.problems.append(f"round {number}: {active} active delegations for the pair")
        activations = [r for r in audit_records(pg, before) if r.action == "delegation.activate"]
        if len(activations) != 1:
            tally.problems.append(f"round {number}: {len(activations)} activation audit records")
        tally.problems += [f"round {number}: {p}" for p in store_problems(pg, race_engine)]
    tally.check()


def test_concurrent_designations_of_the_same_firm(request, pg, management, race_engine, runner):
    """The company's admins designate the same firm (same manager) at once, and each
    activates their own link at once: at most one active delegation per company-firm
    pair, whatever interleaving."""
    mode = request.node.callspec.params["runner"]
    m, tally = management, Tally(f"designations of one firm ({mode})")
    company = siret(6_1000_0000_0001)
    admins = [f"admin{i}@designations.example" for i in range(width(mode))]
    m.register_company(SYSTEM, company, "Désignations SA", admins[0])
    for person in admins[1:]:
        m.add_admin(as_user(admins[0], "setup"), company, person)
    for number in range(ROUNDS):
        # Odd rounds: a firm that does not exist yet (its manager has no account).
        if number % 2:
            firm, manager = siret(6_3000_0000_0000 + number), f"new{number}@designations-firm.example"
        else:
            firm, manager = siret(6_2000_0000_0000), "manager@designations-firm.example"
            with pg.engine.connect() as conn:
                active = conn.execute(select(delegations.c.id).where(
                    delegations.c.company_siret == company, delegations.c.firm_siret == firm,
                    delegations.c.status == "active")).scalars().all()
            for delegation_id in active:
                m.revoke_delegation(as_user(admins[0], "setup"), delegation_id)
        tasks = [("designate_activate", person, company, manager, ["compte", "declarations"], firm)
                 for person in admins]
        results = runner(tasks)
        tally.add(tasks, results)
        for result in results:
            if result[0] == "refused" and (result[1], result[2]) not in {
                    ("Gone", "token_used"), ("Conflict", "delegation_exists")}:
                tally.problems.append(f"round {number}: refused with {result}")
        with pg.engine.connect() as conn:
            active = conn.execute(select(func.count()).select_from(delegations).where(
                delegations.c.company_siret == company, delegations.c.firm_siret == firm,
                delegations.c.status == "active")).scalar()
        if active > 1:
            tally.problems.append(f"round {number}: {active} active delegations for the pair")
        tally.problems += [f"round {number}: {p}" for p in store_problems(pg, race_engine)]
    _, problems = decision_problems(pg, race_engine)
    tally.problems += problems
    tally.check()


def test_first_writes_of_the_same_new_row_at_once(request, pg, management, race_engine, runner):
    """Two calls that each create the same new row (a company by its SIRET, a person by
    their e-mail, a firm by its SIRET) at the same moment: the loser must get a domain
    answer (409 Conflict, or succeed after the winner), never a database error, which the
    HTTP layer turns into a 500 ("No input ever yields a 500")."""
    mode = request.node.callspec.params["runner"]
    m, tally = management, Tally(f"same new row created twice ({mode})")
    for number in range(ROUNDS // 2):
        base = 7_0000_0000_0000 + number * 1000
        # 1. the same SIRET registered twice at once -> one 201, one 409 company_exists
        same_siret = siret(base + 1)
        # 2. two companies registered at once with the same new admin -> both fine
        shared_admin = f"shared{number}@new-person.example"
        # 3. the same new manager activates links from two companies into one new firm
        c1, c2, new_firm = siret(base + 2), siret(base + 3), siret(base + 4)
        manager = f"manager{number}@brand-new-firm.example"
        m.register_company(SYSTEM, c1, "Un", f"one{number}@c.example")
        m.register_company(SYSTEM, c2, "Deux", f"two{number}@c.example")
        t1 = m.designate(as_user(f"one{number}@c.example", "setup"), c1, manager, ["compte"]).activation.token
        t2 = m.designate(as_user(f"two{number}@c.example", "setup"), c2, manager, ["compte"]).activation.token
        for tasks in ([("register", same_siret, "Doublon", f"x{number}@dup.example"),
                       ("register", same_siret, "Doublon", f"y{number}@dup.example")],
                      [("register", siret(base + 5), "Trois", shared_admin),
                       ("register", siret(base + 6), "Quatre", shared_admin)],
                      [("activate", manager, t1, new_firm, "Cabinet Neuf"),
                       ("activate", manager, t2, new_firm, "Cabinet Neuf")]):
            results = runner(tasks)
            tally.add(tasks, results)
            if tasks[0][1] == same_siret:
                outcome = sorted(r[0] if r[0] != "refused" else r[2] for r in results)
                if outcome != ["company_exists", "ok"]:
                    tally.problems.append(f"same SIRET registered twice at once: {results}")
        tally.problems += [f"round {number}: {p}" for p in store_problems(pg, race_engine)]
    tally.check()


def test_the_same_company_registered_twice_at_once_over_http(pg):
    """The same race as above through the HTTP API: two portals register the same SIRET at
    the same moment. Expected 201 for one and 409 (company_exists) for the other."""
    from authz import tokens
    from service.app import create_app

    url = pg.engine.url.render_as_string(hide_password=False)
    app = create_app({"AUTHZ_DATABASE_URL": url, "TESTING": True, "AUTHZ_GUESS_LIMIT": 0,
                      "AUTHZ_LOG_LEVEL": logging.CRITICAL})
    with pg.transaction() as tx:
        tx.insert_api_key("race-portal", "portal", tokens.digest("race-portal-secret"), real_clock())
    headers = {"Authorization": "Bearer race-portal-secret"}
    seen: Counter = Counter()
    bad = []
    try:
        for number in range(ROUNDS):
            body = {"siret": siret(8_0000_0000_0000 + number), "name": "Course", "admin_email": "x@http-race.example"}
            clients = [app.test_client(), app.test_client()]
            barrier = threading.Barrier(2)
            statuses: list[int] = [0, 0]

            def post(i: int, clients=clients, barrier=barrier, statuses=statuses, body=body) -> None:
                barrier.wait()
                statuses[i] = clients[i].post("/v1/companies", json=body, headers=headers).status_code

            threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            seen[tuple(sorted(statuses))] += 1
            if sorted(statuses) != [201, 409]:
                bad.append(f"POST /v1/companies {body['siret']} twice at once -> {statuses}")
    finally:
        app.extensions["authz"].db.dispose()
    print(f"\n[concurrency] same SIRET registered twice at once over HTTP, {ROUNDS} rounds: "
          + ", ".join(f"{pair}: {n}" for pair, n in sorted(seen.items())))
    if bad:
        pytest.fail("expected 201 + 409, got a server error:\n  " + "\n  ".join(bad[:10]), pytrace=False)
