"""Fail closed: with the database down or slow, `authz serve` never answers an allow it
cannot prove, management writes are refused whole, and the service recovers by itself.

Everything runs against a private PostgreSQL server (tests/reliability/private_postgres.py)
that the tests stop and start, or lock; `authz serve --workers 2` is started once per
test and is never restarted by the test:

- the database goes down under load (pg_ctl stop -m immediate), then comes back;
- the database is slow (another connection holds ACCESS EXCLUSIVE locks), with and
  without a statement_timeout in the database URL;
- the connection is lost at COMMIT, after PostgreSQL made the write durable;
- a worker is killed while the database is down.

Run with -s to see the figures RELIABILITY.md quotes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from authz.demo import ADMIN, COMPANY, FIRM, MANAGER
from tests.e2e.harness import Api, Cli, Server, environment
from tests.reliability.load import Load, Outcome, Question, ask
from tests.reliability.private_postgres import PrivatePostgres

COLLABORATOR = "chloe@legrand.example"  # demo: granted declarations and compte on COMPANY
OTHER_COLLABORATOR = "damien@legrand.example"  # demo: granted salaries and conges
STRANGER = "eve@nowhere.example"
QUESTIONS = [
    Question(ADMIN, "declarations", COMPANY, True),          # company admin
    Question(COLLABORATOR, "declarations", COMPANY, True),   # firm -> collaborator grant
    Question(MANAGER, "cotisations", COMPANY, True),         # company -> firm delegation
    Question(COLLABORATOR, "entreprise", COMPANY, False),    # never delegable
    Question(OTHER_COLLABORATOR, "declarations", COMPANY, False),  # not in his grant
    Question(MANAGER, "entreprise", COMPANY, False),
    Question(STRANGER, "declarations", COMPANY, False),      # linked to nothing
]
READERS = 3
WARM_SECONDS = 1.5
OUTAGE_SECONDS = 3.0
AFTER_SECONDS = 2.0
RECOVERY_BOUND = 15.0  # seconds after PostgreSQL accepts connections again
STATEMENT_TIMEOUT_MS = 1000
LOCK_SECONDS = 5.0
MAX_LOCK_SECONDS = 30.0
FRESH_ASKS = 20  # per question, each on a new connection, after recovery


@dataclass
class Stack:
    pg: PrivatePostgres
    database: str
    cli: Cli
    workdir: Path
    pep_key: str
    portal_key: str

    def url(self, query: str = "") -> str:
        return self.pg.url(self.database, query)

    def server(self, name: str, url: str | None = None) -> Server:
        """`authz serve --workers 2`; its TMPDIR (where it keeps its metrics folder) is its own."""
        tmp = self.workdir / f"tmp-{name}-{time.monotonic_ns()}"
        tmp.mkdir()
        env = environment(url or self.url(), TMPDIR=str(tmp))
        return Server(env, self.workdir, self.workdir / f"{name}.log", workers=2)


@pytest.fixture(scope="module")
def stack(private_postgres, tmp_path_factory) -> Stack:
    """The demo story on a database of the private server, keys made by the console script."""
    workdir = tmp_path_factory.mktemp("fail-closed")
    database = private_postgres.create_database("authz_fc")
    cli = Cli(environment(private_postgres.url(database)), workdir)
    cli.ok("db", "upgrade")
    pep_key = cli.create_key("pep", "reliability-pep")
    portal_key = cli.create_key("portal", "reliability-portal")
    cli.ok("demo")
    return Stack(private_postgres, database, cli, workdir, pep_key, portal_key)


@pytest.fixture
def running(stack) -> Iterator[Server]:
    server = stack.server("server")
    try:
        yield server.start()
    finally:
        server.stop()


def writers(portal: Api, domain: str) -> dict:
    """Designations by the company admin and collaborators added by the firm manager, each
    naming a person never named before (m<n>@domain, c<n>@domain)."""

    def designate(n: int):
        email = f"m{n:05d}@{domain}"
        return email, lambda: portal.post(f"/v1/companies/{COMPANY}/delegations",
                                          {"manager_email": email, "scope": ["compte"]}, user=ADMIN)

    def add_collaborator(n: int):
        email = f"c{n:05d}@{domain}"
        return email, lambda: portal.post(f"/v1/firms/{FIRM}/collaborators", {"email": email}, user=MANAGER)

    return {"designate": designate, "collaborator": add_collaborator}


def stored(pg: PrivatePostgres, database: str, domain: str) -> dict[str, Counter]:
    """What the store holds for the people of ``domain``: rows and audit records, per kind."""
    like = f"%@{domain}"
    with pg.connect(database) as conn:
        def count(sql: str) -> Counter:
            return Counter(row[0] for row in conn.execute(sql, (like,)))

        return {
            "designate": count("SELECT manager_email FROM delegations WHERE manager_email LIKE %s"),
            "designate audit": count("SELECT subject_email FROM audit_log "
                                     "WHERE action = 'delegation.designate' AND subject_email LIKE %s"),
            "collaborator": count("SELECT user_email FROM collaborators WHERE user_email LIKE %s"),
            "collaborator audit": count("SELECT subject_email FROM audit_log "
                                        "WHERE action = 'firm.collaborator_add' AND subject_email LIKE %s"),
        }


def check_writes(outcomes: list[Outcome], store: dict[str, Counter],
                 crash: tuple[float, float] | None = None) -> dict[str, int]:
    """No partial write: each write is stored whole (its row and its audit record) or not at
    all; each acknowledged write is stored; each refused write is absent, except a write
    that was in flight when the database crashed (``crash``: from the stop order to the
    server being down): its COMMIT may have been made durable with the reply lost, so it is
    counted apart ("in doubt"). test_a_write_answered_503_... below shows that case alone."""
    figures = Counter()
    for outcome in (o for o in outcomes if o.kind != "decision"):
        rows, audits = store[outcome.kind][outcome.label], store[f"{outcome.kind} audit"][outcome.label]
        assert rows == audits <= 1, f"partial write {outcome}: {rows} rows, {audits} audit records"
        if outcome.status is not None and 200 <= outcome.status < 300:
            figures["acknowledged"] += 1
            assert rows == 1, f"acknowledged {outcome} is not stored"
        elif crash and outcome.sent < crash[1] and outcome.answered >= crash[0]:
            figures["refused while in flight at the crash"] += 1
            figures["of which stored anyway"] += rows
        elif outcome.status is not None:
            figures["refused"] += 1
            assert rows == 0, f"refused {outcome} is stored"
        else:
            figures["unanswered"] += 1  # outcome unknown to the caller: either way is consistent
    return dict(figures)


def statuses(outcomes: list[Outcome]) -> str:
    found = Counter("no answer" if o.status is None else o.status for o in outcomes)
    return ", ".join(f"{status}: {n}" for status, n in sorted(found.items(), key=str)) or "none"


def fresh_round(pep: Api, times: int = FRESH_ASKS) -> list[Outcome]:
    """Every question ``times`` times, each on a new connection (so every worker answers)."""
    return [ask(pep, question) for _ in range(times) for question in QUESTIONS]


def test_database_down_under_load_fails_closed_then_recovers_without_restart(stack, running):
    pep, portal = Api(running.base_url, stack.pep_key), Api(running.base_url, stack.portal_key)
    master, workers_before = running.process.pid, sorted(running.worker_pids() or [])
    load = Load(pep, QUESTIONS, READERS, writers(portal, "down.example")).start()
    time.sleep(WARM_SECONDS)

    stop_called = time.monotonic()
    stack.pg.stop("immediate")  # as if the database server crashed
    down_at = time.monotonic()
    time.sleep(OUTAGE_SECONDS / 2)
    ready_during = Api(running.base_url).get("/readyz")
    refused_during = pep.post("/access/v1/evaluation", {"subject": {"type": "user", "id": ADMIN},
                                                        "action": {"name": "declarations"},
                                                        "resource": {"type": "company", "id": COMPANY}})
    time.sleep(OUTAGE_SECONDS / 2)
    up_called = time.monotonic()
    stack.pg.start()
    accepting = time.monotonic()

    while True:  # the first fresh decision answered right after the database is back
        probe = ask(pep, QUESTIONS[0])
        if probe.status == 200 and probe.decision is True:
            recovered = time.monotonic()
            break
        assert time.monotonic() - accepting < RECOVERY_BOUND, (
            f"not recovered {RECOVERY_BOUND} s after PostgreSQL came back: {probe}\n{running.log()}")
        time.sleep(0.02)
    time.sleep(AFTER_SECONDS)
    outcomes = load.stop()
    after = fresh_round(pep)
    ready_after = Api(running.base_url).get("/readyz")

    decisions = [o for o in outcomes if o.kind == "decision"]
    in_outage = [o for o in outcomes if o.within(down_at, up_called)]
    decided_in_outage = [o for o in in_outage if o.kind == "decision"]
    written_in_outage = [o for o in in_outage if o.kind != "decision"]
    since_recovery = [o for o in decisions if o.sent >= recovered]
    store = stored(stack.pg, stack.database, "down.example")
    writes = check_writes(outcomes, store, crash=(stop_called, down_at))
    wrong_allows = sum(o.wrong_allow for o in outcomes + after)
    workers_after = sorted(running.worker_pids() or [])

    print(f"\n[fail-closed: database down] authz serve --workers 2 on a private PostgreSQL, "
          f"{READERS} decision threads + 2 write threads, outage {up_called - down_at:.1f} s (pg_ctl stop -m immediate)")
    print(f"  requests sent during the run: {len(outcomes)} ({len(decisions)} decisions, "
          f"{len(outcomes) - len(decisions)} writes) + {len(after)} fresh decisions after recovery")
    print(f"  all decisions by status: {statuses(decisions)}")
    print(f"  decisions sent and answered during the outage: {len(decided_in_outage)} ({statuses(decided_in_outage)})")
    print(f"  writes sent and answered during the outage: {len(written_in_outage)} ({statuses(written_in_outage)})")
    print(f"  /readyz during the outage: {ready_during.status}; after: {ready_after.status}; an evaluation during "
          f"the outage: {refused_during.status} {refused_during.error['code']}, "
          f"Retry-After {refused_during.headers.get('retry-after')}")
    print(f"  wrong allows: {wrong_allows}; wrong answers (200 with the wrong decision): "
          f"{sum(o.wrong for o in outcomes + after)}")
    print(f"  recovery: first right answer {recovered - accepting:.2f} s after PostgreSQL accepted connections "
          f"({recovered - up_called:.2f} s after pg_ctl start was called); "
          f"decisions since: {statuses(since_recovery)}; fresh round: {statuses(after)}")
    print(f"  writes: {writes}; store checked: each acknowledged write present once with its audit record, "
          f"each refused one absent (but those in flight at the crash), none half written")
    print(f"  authz serve master pid unchanged: {running.process.poll() is None}; "
          f"workers replaced: {len(set(workers_before) - set(workers_after))}")

    assert wrong_allows == 0
    assert not [o for o in outcomes + after if o.wrong], "a decision answered 200 with the wrong answer"
    assert decided_in_outage and written_in_outage, "the load did not reach the service during the outage"
    assert {o.status for o in in_outage} == {503}, f"during the outage: {statuses(in_outage)}"
    assert {o.error for o in in_outage} == {"store_unavailable"}
    assert ready_during.status == 503 and ready_after.status == 200
    assert refused_during.status == 503 and refused_during.headers.get("retry-after") == "1"
    assert not [o for o in outcomes if o.status is not None and o.status >= 500 and o.status != 503]
    assert recovered - accepting < RECOVERY_BOUND
    assert since_recovery and all(o.status == 200 and not o.wrong for o in since_recovery), statuses(since_recovery)
    assert all(o.status == 200 and not o.wrong for o in after), statuses(after)
    assert writes.get("acknowledged", 0) > 0 and writes.get("refused", 0) > 0
    assert running.process.poll() is None and running.process.pid == master


@dataclass
class Phase:
    outcomes: list[Outcome]
    locked: float
    released: float
    domain: str  # of the people the writes named

    def held(self) -> list[Outcome]:
        """The calls sent and answered while the lock was held (one sent before may have
        committed just before the lock was granted, and be answered after)."""
        return [o for o in self.outcomes if o.within(self.locked, self.released)]

    def overlapping(self) -> list[Outcome]:
        """The calls in progress at some time while the lock was held."""
        return [o for o in self.outcomes if o.sent < self.released and o.answered > self.locked]


def answered_under_lock(outcomes: list[Outcome], locked: float) -> bool:
    """A decision and a write were both sent after the lock was taken and answered already
    (so, while the lock is still held)."""
    kinds = {o.kind == "decision" for o in outcomes if o.sent >= locked}
    return kinds == {True, False}


def lock_phase(stack: Stack, apis: tuple[Api, Api], tables: str, seconds: float,
               until: Callable[[list[Outcome], float], bool] | None = None) -> Phase:
    """Load the service while another connection holds ACCESS EXCLUSIVE locks on ``tables``
    for ``seconds``, and longer (up to MAX_LOCK_SECONDS) until ``until(answered, locked)``:
    on a busy machine, calls queue behind those stuck on the lock, and a fixed window may
    end before any call sent in it is answered."""
    pep, portal = apis
    domain = f"slow{time.monotonic_ns()}.example"
    load = Load(pep, QUESTIONS, READERS, writers(portal, domain)).start()
    time.sleep(1.0)
    with stack.pg.connect(stack.database) as locker:
        for attempt in range(20):
            try:
                with locker.transaction():
                    # Tables are locked one after the other: a service write holding one of them
                    # while waiting for another makes a deadlock, and then try again.
                    locker.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
                    locked = time.monotonic()
                    time.sleep(seconds)
                    while until and not until(load.so_far(), locked) and time.monotonic() - locked < MAX_LOCK_SECONDS:
                        time.sleep(0.1)
                    released = time.monotonic()  # the transaction, and the lock, end on leaving the block
                break
            except psycopg.errors.DeadlockDetected:
                assert attempt < 19, "could not take the locks"
    time.sleep(1.0)
    return Phase(load.stop(), locked, released, domain)


def latency(outcomes: list[Outcome]) -> str:
    if not outcomes:
        return "-"
    spans = sorted(o.answered - o.sent for o in outcomes)
    return f"median {spans[len(spans) // 2]:.2f} s, max {spans[-1]:.2f} s"


def test_slow_database_with_statement_timeout_answers_503_never_a_wrong_allow(stack):
    """statement_timeout (set in the URL's options) bounds every query: a query stuck
    behind a lock is cancelled, the request answers 503, and nothing is half written."""
    url = stack.url(f"options=-c%20statement_timeout%3D{STATEMENT_TIMEOUT_MS}")
    server = stack.server("slow-timeout", url)
    try:
        server.start()
        apis = (Api(server.base_url, stack.pep_key), Api(server.base_url, stack.portal_key))
        phases = {
            "data_version (read by every request)": lock_phase(
                stack, apis, "data_version", LOCK_SECONDS, answered_under_lock),
            "the link tables (delegations, grants, company_admins, firms, collaborators)": lock_phase(
                stack, apis, "delegations, grants, company_admins, firms, collaborators", LOCK_SECONDS,
                answered_under_lock),
        }
        after = fresh_round(apis[0], 5)
    finally:
        server.stop()

    print(f"\n[fail-closed: slow database, statement_timeout={STATEMENT_TIMEOUT_MS} ms in the URL] "
          f"LOCK TABLE ... IN ACCESS EXCLUSIVE MODE held by another connection for {LOCK_SECONDS:.0f} s, longer "
          f"until a decision and a write sent under it were answered")
    for tables, phase in phases.items():
        outcomes, held, overlapping = phase.outcomes, phase.held(), phase.overlapping()
        decided = [o for o in held if o.kind == "decision"]
        written = [o for o in held if o.kind != "decision"]
        writes = check_writes(outcomes, stored(stack.pg, stack.database, phase.domain))
        print(f"  lock on {tables} ({phase.released - phase.locked:.1f} s): {len(outcomes)} requests; sent and answered while the lock was held: decisions "
              f"{statuses(decided)}, writes {statuses(written)}; in progress during the lock: "
              f"{statuses(overlapping)} ({latency(overlapping)}); wrong allows {sum(o.wrong_allow for o in outcomes)}, "
              f"wrong answers {sum(o.wrong for o in outcomes)}; writes {writes}")
        assert sum(o.wrong_allow for o in outcomes) == 0
        assert not [o for o in outcomes if o.wrong]
        assert held, "nothing was answered while the lock was held"
        assert {o.status for o in written} <= {503}, statuses(written)
        assert {o.status for o in overlapping} <= {200, 201, 503}, statuses(overlapping)
    decided_first = [o for o in next(iter(phases.values())).held() if o.kind == "decision"]
    assert decided_first and {o.status for o in decided_first} == {503}, statuses(decided_first)
    print(f"  after the locks: {statuses(after)}")
    assert all(o.status == 200 and not o.wrong for o in after)


def test_slow_database_without_statement_timeout_waits_then_answers_right(stack):
    """With no statement_timeout, a request stuck behind a lock waits for it; once the lock
    goes, the answers are right. (How long it would wait for a lock never released is not
    measured here: gunicorn's 30 s worker timeout, service/server.py, is the next bound.)"""
    server = stack.server("slow-no-timeout")
    lock_seconds = 3.0
    try:
        server.start()
        apis = (Api(server.base_url, stack.pep_key), Api(server.base_url, stack.portal_key))
        phase = lock_phase(stack, apis, "data_version", lock_seconds)
    finally:
        server.stop()
    outcomes = phase.outcomes
    waited = [o for o in outcomes if o.sent < phase.released and o.answered > phase.locked]
    decided = [o for o in waited if o.kind == "decision"]
    print(f"\n[fail-closed: slow database, no statement_timeout] lock on data_version held {lock_seconds:.0f} s: "
          f"{len(outcomes)} requests; in progress during the lock: decisions {statuses(decided)} "
          f"({latency(decided)}), writes {statuses([o for o in waited if o.kind != 'decision'])}; "
          f"wrong allows {sum(o.wrong_allow for o in outcomes)}")
    assert sum(o.wrong_allow for o in outcomes) == 0
    assert not [o for o in outcomes if o.wrong]
    assert decided and {o.status for o in decided} == {200}, statuses(decided)
    assert {o.status for o in waited} == {200, 201}, statuses(waited)
    assert max(o.answered - o.sent for o in decided) >= lock_seconds / 2, "nothing waited for the lock"


def test_a_write_answered_503_is_not_stored_when_the_connection_drops_at_commit(stack, running):
    """The reply to a write must tell the truth about the store: a write answered 503
    ("the database is unavailable") must not be there afterwards.

    The fault, made deterministic: the connection is lost after PostgreSQL has made the
    COMMIT durable and before its reply reaches the service (what `pg_ctl stop -m
    immediate` does by chance to a write in flight, in the load test above). Here every
    commit of the private server waits for a synchronous standby that does not exist;
    the service's backend, waiting at COMMIT, is then terminated: PostgreSQL keeps the
    transaction ("The transaction has already committed locally") and the service sees
    its connection closed during COMMIT."""
    portal = Api(running.base_url, stack.portal_key)
    email = f"in-doubt-{time.monotonic_ns()}@commit.example"
    replies: list = []
    with stack.pg.connect() as admin:
        admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'authz_no_such_standby'")
        admin.execute("SELECT pg_reload_conf()")
        try:
            writer = threading.Thread(target=lambda: replies.append(portal.post(
                f"/v1/companies/{COMPANY}/delegations", {"manager_email": email, "scope": ["compte"]}, user=ADMIN)))
            writer.start()
            waiting = []
            deadline = time.monotonic() + 10
            while not waiting and time.monotonic() < deadline:
                waiting = admin.execute("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' "
                                        "AND datname = %s", (stack.database,)).fetchall()
                time.sleep(0.05)
            assert waiting, "the write never reached COMMIT"
            for (pid,) in waiting:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        finally:
            admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            admin.execute("SELECT pg_reload_conf()")
        writer.join(timeout=30)
    reply = replies[0]
    store = stored(stack.pg, stack.database, "commit.example")
    present = store["designate"][email], store["designate audit"][email]
    with stack.pg.connect(stack.database) as conn:
        listed = conn.execute("SELECT status FROM delegations WHERE manager_email = %s", (email,)).fetchall()
    print(f"\n[fail-closed: connection lost at COMMIT] designation answered {reply.status} "
          f"{(reply.body or {}).get('error', {}).get('code', '')}; afterwards the store holds "
          f"{present[0]} delegation row(s) {listed} and {present[1]} audit record(s) for it")
    assert present[0] == present[1], "half written"
    if reply.status >= 500:
        assert present == (0, 0), (
            f"the write was answered {reply.status} {reply.body} but it is stored: the caller is told the "
            f"database was unavailable for a change that was made")
    else:
        assert reply.status == 201 and present == (1, 1)


def test_a_worker_replaced_while_the_database_is_down_boots_and_recovers(stack, running):
    """A worker that dies during an outage is replaced by one that boots without the
    database (it answers 503 until the database is back), and the service recovers."""
    pep = Api(running.base_url, stack.pep_key)
    stack.pg.stop("immediate")
    try:
        before = running.worker_pids() or []
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + RECOVERY_BOUND
        tmp = Path(running.env["TMPDIR"])
        while time.monotonic() < deadline:  # until the new worker has built the app (its metrics file)
            new = set(running.worker_pids() or []) - set(before)
            if running.process.poll() is not None or (
                    new and all(any(tmp.glob(f"authz-metrics-*/counter_{pid}.db")) for pid in new)):
                break
            time.sleep(0.05)
        during = fresh_round(pep, 2) if running.process.poll() is None else []
    finally:
        stack.pg.start()
    accepting = time.monotonic()
    while running.process.poll() is None and time.monotonic() - accepting < RECOVERY_BOUND:
        if ask(pep, QUESTIONS[0]).status == 200:
            break
        time.sleep(0.02)
    recovered = time.monotonic() - accepting
    after = fresh_round(pep, 4) if running.process.poll() is None else []
    print(f"\n[fail-closed: worker killed during the outage] authz serve up: {running.process.poll() is None}; "
          f"workers {before} -> {running.worker_pids()}; decisions during the outage: {statuses(during)}; "
          f"recovered {recovered:.2f} s after PostgreSQL accepted connections; after: {statuses(after)}")
    assert running.process.poll() is None, running.log()
    assert before[0] not in (running.worker_pids() or [])
    assert during and {o.status for o in during} == {503}
    assert after and all(o.status == 200 and not o.wrong for o in after)
