"""The soak's traffic: one client thread per lane of the scenario, reads and writes mixed.

A lane is a small world of its own: 4 member companies, 2 accounting firms, their
admins, managers and collaborators (and a stranger), disjoint from every other lane's.
One thread drives each lane, so a lane's writes happen one after the other and the
thread knows the lane's state at every moment: it keeps it in the independent
reference model of ``tests/property/reference.py``.

* Every write is made by the rightful person of the story through the management API,
  as a portal would. Before sending it, the reference says whether the domain refuses
  it and why; the answer must be the expected ``2xx``, or one of the ``4xx`` the
  reference names (a refusal on purpose: a firm designated twice, a grant beyond the
  firm's rights, the last admin removed, a change of a closed link, the second of two
  identical writes sent at the same instant). Anything else is an error.
* Every read is a decision, a batch, a search, an explanation, a firm's client list or
  a company's delegation list, and its answer is compared with the reference. One
  question in twenty names a person never seen before (a new one each time: the
  answer caches meet keys they never held).
* End dates: most links have none, some end in 30 days, some end a minute or so later,
  so links lapse by themselves during the soak. An answer that would change within a
  second of the call is not compared (counted as ``ambiguous``); no short end date is
  set near the end, so the final check never meets one.

Activations are only sent when the reference accepts them: a refused activation counts
as a guess for the service's throttle (``service/throttle.py``), and every client of
the soak shares one address.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tests.e2e.harness import Api, Reply
from tests.property.reference import (
    ACTIVE,
    CONFLICT,
    DELEGABLE,
    EXPIRED,
    FORBIDDEN,
    GONE,
    INVALID,
    NOT_FOUND,
    PENDING,
    REVOKED,
    RIGHTS,
    RefDelegation,
    Reference,
    RefGrant,
    lapsed,
)
from tests.support import siret

COMPANIES_PER_LANE = 4
FIRMS_PER_LANE = 2
COLLABORATORS_PER_LANE = 5
UNKNOWN_RIGHT = "paie"  # not a right of the policy
UNKNOWN_COMPANY = siret(1_5999_9999_9999)  # never registered
CHECK_RIGHTS = (*RIGHTS, UNKNOWN_RIGHT)
DELEGABLE_RIGHTS = tuple(sorted(DELEGABLE))
MARGIN = timedelta(seconds=1)  # an answer that changes within this of the call is ambiguous
LONG_END = timedelta(days=30)
STATUS_OF = {FORBIDDEN: 403, INVALID: 400, CONFLICT: 409, NOT_FOUND: 404, GONE: 410}
KEPT = 30  # error and wrong-answer texts kept for the report

READS = {  # kind -> weight among reads
    "evaluation": 40, "evaluations": 15, "search_action": 10, "search_resource": 10, "search_subject": 10,
    "explain": 5, "clients": 5, "list_delegations": 5,
}
WRITES = {  # kind -> weight among writes
    "designate": 10, "activate": 3, "change_delegation": 10, "revoke_delegation": 6, "add_collaborator": 8,
    "remove_collaborator": 4, "grant": 14, "change_grant": 10, "revoke_grant": 6, "add_admin": 3,
    "remove_admin": 3, "closed_link": 3,
}


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


def quoted(email: str) -> str:
    return urllib.parse.quote(email, safe="@")


class Tally:
    """Every call of the soak, shared by the lanes: statuses, refusals, errors, answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # kind -> calls
        self.statuses: Counter[tuple[str, str]] = Counter()  # (kind, status) -> calls
        self.refusals: Counter[tuple[str, int, str]] = Counter()  # (kind, status, code): expected 4xx
        self.errors: Counter[str] = Counter()  # kind -> calls that are errors
        self.error_texts: list[str] = []
        self.answers: Counter[str] = Counter()  # kind -> answers compared with the reference
        self.wrong: Counter[str] = Counter()  # kind -> answers that differ from the reference
        self.wrong_texts: list[str] = []
        self.ambiguous = 0  # answers not compared: an end date within MARGIN of the call
        self.skipped_writes = 0  # writes not sent: their outcome depended on an end date within MARGIN
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.per_minute: Counter[int] = Counter()  # minute of the run -> calls answered
        self.started = time.monotonic()

    def call(self, kind: str, status: int | None, seconds: float) -> None:
        with self._lock:
            self.calls[kind] += 1
            self.statuses[(kind, "no answer" if status is None else str(status))] += 1
            self.latencies[kind].append(seconds)
            self.per_minute[int((time.monotonic() - self.started) // 60)] += 1

    def refused(self, kind: str, status: int, code: str) -> None:
        with self._lock:
            self.refusals[(kind, status, code)] += 1

    def error(self, kind: str, text: str) -> None:
        with self._lock:
            self.errors[kind] += 1
            if len(self.error_texts) < KEPT:
                self.error_texts.append(f"{kind}: {text}")

    def compared(self, kind: str, count: int, wrong_text: str | None = None) -> None:
        with self._lock:
            self.answers[kind] += count
            if wrong_text is not None:
                self.wrong[kind] += 1
                if len(self.wrong_texts) < KEPT:
                    self.wrong_texts.append(f"{kind}: {wrong_text}")

    def unsure(self, reads: int = 0, writes: int = 0) -> None:
        with self._lock:
            self.ambiguous += reads
            self.skipped_writes += writes

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def total_wrong(self) -> int:
        return sum(self.wrong.values())


def error_code(reply: Reply) -> str:
    body = reply.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code", ""))
    return ""


@dataclass
class Lane:
    """One small world of the scenario and the thread that drives it."""

    index: int
    pep: Api
    portal: Api
    tally: Tally
    rng: random.Random
    short_end: timedelta  # how long a "short" end date lasts
    write_share: float
    ref: Reference = field(default_factory=Reference)
    closed_delegations: dict[str, RefDelegation] = field(default_factory=dict)
    closed_grants: dict[str, RefGrant] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # pending delegation id -> activation token
    short_ends_until: float = float("inf")  # time.monotonic() after which no short end date is set
    visitors: int = 0  # unknown people asked about so far
    steps: int = 0  # reads and writes chosen so far
    stopped: str = ""  # why the lane stopped before the end (after a write error: its state is unknown)

    def __post_init__(self) -> None:
        n = self.index
        self.companies = [siret(1_5000_0000_0000 + 100 * n + i) for i in range(COMPANIES_PER_LANE)]
        self.firms = [siret(2_5000_0000_0000 + 100 * n + j) for j in range(FIRMS_PER_LANE)]
        self.founders = [f"admin{i}.l{n}@company.soak.example" for i in range(COMPANIES_PER_LANE)]
        self.deputies = [f"deputy{k}.l{n}@company.soak.example" for k in range(2)]
        self.managers = [f"manager{j}.l{n}@firm.soak.example" for j in range(FIRMS_PER_LANE)]
        # The first deputy admin also works for the firms: one person, two roles.
        self.pool = [f"collab{k}.l{n}@firm.soak.example" for k in range(COLLABORATORS_PER_LANE)] + self.deputies[:1]
        self.stranger = f"stranger.l{n}@nowhere.soak.example"
        self.users = sorted({*self.founders, *self.deputies, *self.managers, *self.pool, self.stranger})

    # ---- the calls ------------------------------------------------------------------------

    def _send(self, kind: str, call: Callable[[], Reply]) -> Reply | None:
        began = time.monotonic()
        try:
            reply = call()
        except Exception as exc:  # noqa: BLE001 - no HTTP answer at all is an error of the soak
            self.tally.call(kind, None, time.monotonic() - began)
            self.tally.error(kind, f"no answer: {type(exc).__name__}: {exc}")
            return None
        self.tally.call(kind, reply.status, time.monotonic() - began)
        return reply

    def _write(self, kind: str, refusals: Callable[[datetime], set[str]], call: Callable[[], Reply],
               success: int = 200) -> Reply | None:
        """Send a write whose outcome the reference decides; return the reply if it was accepted."""
        at = now()
        if refusals(at - MARGIN) != refusals(at + MARGIN):
            self.tally.unsure(writes=1)  # an end date decides it: do not send it
            return None
        reply = self._send(kind, call)
        if reply is None:
            self.stopped = f"{kind}: no answer, the lane's state is unknown"
            return None
        # The server decided at some instant between sending and answering (a slow answer may
        # have met an end date): any outcome the reference gives over that span is right.
        outcomes = [refusals(at - MARGIN), refusals(now() + MARGIN)]
        expected = {STATUS_OF[r] for reasons in outcomes for r in reasons} | (
            {success} if not all(outcomes) else set())
        if reply.status not in expected:
            self.tally.error(kind, f"answered {reply.status} {reply.body}, the reference expected "
                                   f"{sorted(expected)} (refusals: {[sorted(r) for r in outcomes]})")
            self.stopped = f"{kind}: answered {reply.status}, the lane's state is unknown"
            return None
        if reply.status != success:
            self.tally.refused(kind, reply.status, error_code(reply))
            return None
        return reply

    def _race(self, kind: str, call: Callable[[], Reply], success: int = 201) -> Reply | None:
        """The same write twice at the same instant: one must be accepted, the other refused 409."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            replies = list(pool.map(lambda _: self._send(kind, call), range(2)))
        statuses = sorted(r.status if r is not None else 0 for r in replies)
        if statuses != sorted([success, 409]):
            self.tally.error(kind, f"two identical writes at once answered {statuses}, expected one {success} and "
                                   f"one 409: {[r.body if r else None for r in replies]}")
            self.stopped = f"{kind} race: answered {statuses}, the lane's state is unknown"
            return None
        accepted = next(r for r in replies if r is not None and r.status == success)
        refused = next(r for r in replies if r is not None and r.status == 409)
        self.tally.refused(f"{kind} (race)", 409, error_code(refused))
        return accepted

    def _read(self, kind: str, call: Callable[[], Reply], expected: Callable[[datetime], object],
              answer: Callable[[dict], object], count: Callable[[object], int] = lambda _: 1) -> None:
        """Send a read and compare its answer with the reference's, unless an end date makes it ambiguous."""
        before = now() - MARGIN
        reply = self._send(kind, call)
        if reply is None:
            return
        after = now() + MARGIN
        if reply.status != 200 or not isinstance(reply.body, dict):
            self.tally.error(kind, f"answered {reply.status} {reply.body}")
            return
        want = expected(before)
        if want != expected(after):
            self.tally.unsure(reads=1)
            return
        try:
            got = answer(reply.body)
        except (KeyError, TypeError, ValueError) as exc:
            self.tally.error(kind, f"malformed answer ({exc!r}): {reply.body}")
            return
        self.tally.compared(kind, count(want), None if got == want else f"service {got!r}, reference {want!r}")

    def _check_record(self, kind: str, got: dict, want: dict) -> None:
        """An accepted write's record must say what the reference says."""
        seen = {name: got.get(name) for name in want}
        if seen != want:
            self.tally.error(kind, f"record {seen} != reference {want}")

    # ---- picking ----------------------------------------------------------------------------

    def _ends(self) -> datetime | None:
        roll = self.rng.random()
        if roll < 0.7:
            return None
        base = now().replace(microsecond=0)
        if roll < 0.85 or time.monotonic() >= self.short_ends_until:
            return base + LONG_END
        return base + self.short_end

    def _admin_of(self, company: str) -> str:
        return self.rng.choice(sorted(self.ref.admins[company]))

    def _firm_of(self, manager: str) -> str:
        return self.firms[self.managers.index(manager)]

    def _held(self, firm: str, company: str) -> list[str]:
        at = now()
        return [r for r in DELEGABLE_RIGHTS if self.ref.firm_holds(firm, r, company, at)]

    def _scope(self, rights: tuple[str, ...] | list[str]) -> list[str]:
        return sorted(self.rng.sample(list(rights), self.rng.randint(1, len(rights))))

    def _triple(self) -> tuple[str, str, str]:
        company = UNKNOWN_COMPANY if self.rng.random() < 0.03 else self.rng.choice(self.companies)
        if self.rng.random() < 0.05:  # someone the service never heard of, each time another one
            self.visitors += 1
            return f"visitor{self.visitors}.l{self.index}@nowhere.soak.example", self.rng.choice(CHECK_RIGHTS), company
        return self.rng.choice(self.users), self.rng.choice(CHECK_RIGHTS), company

    # The store closes a lapsed link (still "active" in storage, its end date passed) as
    # "expired" when a new link takes its place; the reference leaves such a link as it is
    # (it shows "expired" either way). Mirrored here, so that a later change (a removed
    # collaborator ends the grants still active in storage) ends the same links.

    def _close_lapsed_delegations(self, company: str, firm: str) -> None:
        at = now()
        for d in (*self.closed_delegations.values(), *self.ref.delegations.values()):
            if (d.company, d.firm, d.status) == (company, firm, ACTIVE) and lapsed(d.ends_at, at):
                d.status = EXPIRED

    def _close_lapsed_grants(self, firm: str, email: str, company: str) -> None:
        at = now()
        for g in (*self.closed_grants.values(), *self.ref.grants.values()):
            if (g.firm, g.collaborator, g.company, g.status) == (firm, email, company, ACTIVE) and lapsed(g.ends_at, at):
                g.status = EXPIRED

    def prune(self) -> None:
        """Move links that can never count again (revoked, closed, lapsed) out of the live state."""
        horizon = now() - MARGIN
        for d in list(self.ref.delegations.values()):
            if d.status in (REVOKED, EXPIRED) or (d.status == ACTIVE and lapsed(d.ends_at, horizon)):
                self.closed_delegations[d.id] = self.ref.delegations.pop(d.id)
                self.tokens.pop(d.id, None)
        for g in list(self.ref.grants.values()):
            if g.status != ACTIVE or lapsed(g.ends_at, horizon):
                self.closed_grants[g.id] = self.ref.grants.pop(g.id)

    def whole(self) -> Reference:
        """The lane's state with its closed links: what the store must hold."""
        return Reference(
            admins={c: set(a) for c, a in self.ref.admins.items()},
            managers=dict(self.ref.managers),
            collaborators={f: set(c) for f, c in self.ref.collaborators.items()},
            delegations={**self.closed_delegations, **self.ref.delegations},
            grants={**self.closed_grants, **self.ref.grants},
        )

    # ---- the starting scenario -------------------------------------------------------------

    def set_up(self) -> None:
        """Companies with their admins, firms designated and activated, collaborators and grants."""
        for company, founder in zip(self.companies, self.founders, strict=True):
            self.register(company, founder)
        self.add_admin(self.companies[0], self.deputies[0])
        for i, company in enumerate(self.companies):
            for j in range(FIRMS_PER_LANE):
                if j == 0 or i % 2 == 0:
                    self.designate(company, j, self._scope(DELEGABLE_RIGHTS), ends_at=None, activate=True)
        for j, firm in enumerate(self.firms):
            for email in self.pool[j::FIRMS_PER_LANE]:
                self.add_collaborator(firm, email)
        for firm in self.firms:
            for email in sorted(self.ref.collaborators.get(firm, ())):
                for company in self.companies[:2]:
                    held = self._held(firm, company)
                    if held:
                        self.grant(firm, email, company, self._scope(held), ends_at=None)

    def register(self, company: str, founder: str) -> None:
        reply = self._write("register_company", lambda _: self.ref.refusals_register_company(company),
                            lambda: self.portal.post("/v1/companies", {
                                "siret": company, "name": f"Entreprise soak {company}", "admin_email": founder}),
                            201)
        if reply is not None:
            self.ref.apply_register_company(company, founder)

    # ---- writes ---------------------------------------------------------------------------

    def add_admin(self, company: str, email: str) -> None:
        actor = self._admin_of(company)
        reply = self._write("add_admin", lambda _: self.ref.refusals_add_admin(actor, company, email),
                            lambda: self.portal.post(f"/v1/companies/{company}/admins", {"email": email}, user=actor),
                            201)
        if reply is not None:
            self.ref.apply_add_admin(company, email)
            self._check_record("add_admin", reply.body, {"admins": sorted(self.ref.admins[company])})

    def remove_admin(self, company: str, email: str) -> None:
        actor = self._admin_of(company)
        reply = self._write("remove_admin", lambda _: self.ref.refusals_remove_admin(actor, company, email),
                            lambda: self.portal.delete(f"/v1/companies/{company}/admins/{quoted(email)}", user=actor))
        if reply is not None:
            self.ref.apply_remove_admin(company, email)
            self._check_record("remove_admin", reply.body, {"admins": sorted(self.ref.admins[company])})

    def designate(self, company: str, j: int, scope: list[str], ends_at: datetime | None, activate: bool) -> None:
        actor, manager = self._admin_of(company), self.managers[j]
        reply = self._write(
            "designate", lambda at: self.ref.refusals_designate(actor, company, manager, scope, ends_at, at),
            lambda: self.portal.post(f"/v1/companies/{company}/delegations",
                                     {"manager_email": manager, "scope": scope, "ends_at": iso(ends_at)}, user=actor),
            201)
        if reply is None:
            return
        body = reply.body
        token = body["activation"]["token"]
        d = self.ref.apply_designate(body["id"], token, company, manager, scope, ends_at, now())
        self._check_record("designate", body, {"status": PENDING, "scope": sorted(scope), "ends_at": iso(ends_at),
                                               "company": company, "manager_email": manager})
        self.tokens[d.id] = token
        if activate:
            self.activate(d.id)

    def activate(self, delegation_id: str) -> None:
        d = self.ref.delegations[delegation_id]
        token, manager = self.tokens[delegation_id], d.manager_email
        firm = self._firm_of(manager)
        if self.ref.refusals_activate(manager, token, firm, now()) - {CONFLICT}:
            return  # a refused activation is a guess for the throttle: never sent
        reply = self._write("activate", lambda at: self.ref.refusals_activate(manager, token, firm, at),
                            lambda: self.portal.post("/v1/activations", {
                                "token": token, "firm_siret": firm, "firm_name": f"Cabinet soak {firm}"},
                                user=manager))
        if reply is not None:
            self._close_lapsed_delegations(d.company, firm)
            d = self.ref.apply_activate(manager, token, firm)
            self.tokens.pop(delegation_id, None)
            at = now()
            if d.shown_status(at - MARGIN) == d.shown_status(at + MARGIN):  # active, or expired by its end date
                self._check_record("activate", reply.body, {"status": d.shown_status(at), "firm": firm,
                                                            "id": delegation_id})

    def change_delegation(self, d: RefDelegation) -> None:
        actor = self._admin_of(d.company)
        body: dict = {}
        if self.rng.random() < 0.75:
            body["scope"] = self._scope(DELEGABLE_RIGHTS)
        if "scope" not in body or self.rng.random() < 0.25:
            body["ends_at"] = iso(self._ends())
        scope, ends_at, clear = body.get("scope"), parse(body.get("ends_at")), "ends_at" in body and body["ends_at"] is None
        reply = self._write(
            "change_delegation",
            lambda at: self.ref.refusals_change_delegation(actor, d.id, scope, ends_at, clear, at),
            lambda: self.portal.patch(f"/v1/delegations/{d.id}", body, user=actor))
        if reply is not None:
            self.ref.apply_change_delegation(d.id, scope, ends_at, clear)
            self._check_record("change_delegation", reply.body, {"scope": sorted(d.scope), "ends_at": iso(d.ends_at)})

    def revoke_delegation(self, d: RefDelegation) -> None:
        renounce = d.firm is not None and self.rng.random() < 0.3  # the firm renounces
        actor = self.ref.managers[d.firm] if renounce and d.firm else self._admin_of(d.company)
        reply = self._write("revoke_delegation", lambda _: self.ref.refusals_revoke_delegation(actor, d.id),
                            lambda: self.portal.delete(f"/v1/delegations/{d.id}", user=actor))
        if reply is not None:
            self.ref.apply_revoke_delegation(d.id)
            self._check_record("revoke_delegation", reply.body, {"status": REVOKED})

    def add_collaborator(self, firm: str, email: str, race: bool = False) -> None:
        manager = self.ref.managers.get(firm, self.managers[self.firms.index(firm)])
        refusals = self.ref.refusals_add_collaborator(manager, firm, email)

        def call() -> Reply:
            return self.portal.post(f"/v1/firms/{firm}/collaborators", {"email": email}, user=manager)

        if race and not refusals:
            reply = self._race("add_collaborator", call)
        else:
            reply = self._write("add_collaborator", lambda _: refusals, call, 201)
        if reply is not None:
            self.ref.apply_add_collaborator(firm, email)

    def remove_collaborator(self, firm: str, email: str) -> None:
        manager = self.ref.managers[firm]
        # Lapsed grants still read active in the store, and the removal ends them too.
        for g in [g for g in self.closed_grants.values() if (g.firm, g.collaborator, g.status) == (firm, email, ACTIVE)]:
            self.ref.grants[g.id] = self.closed_grants.pop(g.id)
        reply = self._write("remove_collaborator", lambda _: self.ref.refusals_remove_collaborator(manager, firm, email),
                            lambda: self.portal.delete(f"/v1/firms/{firm}/collaborators/{quoted(email)}", user=manager))
        if reply is not None:
            must, may = self.ref.apply_remove_collaborator(firm, email, now() + MARGIN)
            ended = set(reply.body.get("grants_revoked") or [])
            if not must <= ended <= may:
                self.tally.error("remove_collaborator", f"grants ended {sorted(ended)}, the reference says at least "
                                                        f"{sorted(must)} and at most {sorted(may)}")

    def grant(self, firm: str, email: str, company: str, scope: list[str], ends_at: datetime | None,
              race: bool = False) -> None:
        manager = self.ref.managers[firm]
        body = {"collaborator": email, "company": company, "scope": scope, "ends_at": iso(ends_at)}

        def refusals(at: datetime) -> set[str]:
            return self.ref.refusals_grant(manager, firm, email, company, scope, ends_at, at)

        def call() -> Reply:
            return self.portal.post(f"/v1/firms/{firm}/grants", body, user=manager)

        at = now()
        if race and not refusals(at - MARGIN) and not refusals(at + MARGIN):
            reply = self._race("grant", call)
        else:
            reply = self._write("grant", refusals, call, 201)
        if reply is not None:
            self._close_lapsed_grants(firm, email, company)
            g = self.ref.apply_grant(reply.body["id"], firm, email, company, scope, ends_at)
            self._check_record("grant", reply.body, {"status": ACTIVE, "scope": sorted(g.scope),
                                                     "ends_at": iso(ends_at), "firm": firm, "company": company})

    def change_grant(self, g: RefGrant) -> None:
        manager = self.ref.managers[g.firm]
        body: dict = {}
        if self.rng.random() < 0.75:
            held = self._held(g.firm, g.company)
            beyond = [r for r in DELEGABLE_RIGHTS if r not in held]
            if held and (self.rng.random() < 0.9 or not beyond):
                body["scope"] = self._scope(held)
            else:
                body["scope"] = sorted({*held[:1], self.rng.choice(beyond or list(DELEGABLE_RIGHTS))})
        if "scope" not in body or self.rng.random() < 0.25:
            body["ends_at"] = iso(self._ends())
        scope, ends_at, clear = body.get("scope"), parse(body.get("ends_at")), "ends_at" in body and body["ends_at"] is None
        reply = self._write("change_grant",
                            lambda at: self.ref.refusals_change_grant(manager, g.id, scope, ends_at, clear, at),
                            lambda: self.portal.patch(f"/v1/grants/{g.id}", body, user=manager))
        if reply is not None:
            self.ref.apply_change_grant(g.id, scope, ends_at, clear)
            self._check_record("change_grant", reply.body, {"scope": sorted(g.scope), "ends_at": iso(g.ends_at)})

    def revoke_grant(self, g: RefGrant) -> None:
        manager = self.ref.managers[g.firm]
        reply = self._write("revoke_grant", lambda _: self.ref.refusals_revoke_grant(manager, g.id),
                            lambda: self.portal.delete(f"/v1/grants/{g.id}", user=manager))
        if reply is not None:
            self.ref.apply_revoke_grant(g.id)
            self._check_record("revoke_grant", reply.body, {"status": REVOKED})

    def closed_link(self) -> None:
        """Touch a closed link on purpose: a change is refused (409), a revocation answers 200."""
        pick = self.rng.random()
        if pick < 0.5 and self.closed_grants:
            g = self.closed_grants.pop(self.rng.choice(sorted(self.closed_grants)))
            self.ref.grants[g.id] = g  # back in the state for the call, pruned again after it
            (self.change_grant if pick < 0.3 else self.revoke_grant)(g)
        elif self.closed_delegations:
            d = self.closed_delegations.pop(self.rng.choice(sorted(self.closed_delegations)))
            self.ref.delegations[d.id] = d
            if pick < 0.8:
                self.change_delegation(d)
            else:
                self.revoke_delegation(d)

    def some_write(self) -> None:
        kind = self.rng.choices(list(WRITES), weights=list(WRITES.values()))[0]
        rng, ref = self.rng, self.ref
        live_delegations = sorted(ref.delegations)
        live_grants = sorted(ref.grants)
        if kind == "designate":
            company, j = rng.choice(self.companies), rng.randrange(FIRMS_PER_LANE)
            self.designate(company, j, self._scope(DELEGABLE_RIGHTS), self._ends(), activate=rng.random() < 0.85)
        elif kind == "activate" and self.tokens:
            self.activate(rng.choice(sorted(self.tokens)))
        elif kind == "change_delegation" and live_delegations:
            self.change_delegation(ref.delegations[rng.choice(live_delegations)])
        elif kind == "revoke_delegation" and live_delegations:
            self.revoke_delegation(ref.delegations[rng.choice(live_delegations)])
        elif kind == "add_collaborator":
            firm = rng.choice(self.firms)
            self.add_collaborator(firm, rng.choice(self.pool), race=rng.random() < 0.2)
        elif kind == "remove_collaborator":
            firm = rng.choice(self.firms)
            members = sorted(ref.collaborators.get(firm, ()))
            if members and firm in ref.managers:
                self.remove_collaborator(firm, rng.choice(members))
        elif kind == "grant":
            self._some_grant()
        elif kind == "change_grant" and live_grants:
            self.change_grant(ref.grants[rng.choice(live_grants)])
        elif kind == "revoke_grant" and live_grants:
            self.revoke_grant(ref.grants[rng.choice(live_grants)])
        elif kind == "add_admin":
            self.add_admin(rng.choice(self.companies), rng.choice(self.deputies))
        elif kind == "remove_admin":
            company = rng.choice(self.companies)
            self.remove_admin(company, rng.choice(sorted(ref.admins[company])))
        elif kind == "closed_link":
            self.closed_link()

    def _some_grant(self) -> None:
        rng, ref = self.rng, self.ref
        firm = rng.choice([f for f in self.firms if f in ref.managers] or [None])
        if firm is None:
            return
        members = sorted(ref.collaborators.get(firm, ()))
        # Mostly a collaborator of the firm; now and then someone who is not (refused 409).
        email = rng.choice(members) if members and rng.random() < 0.95 else rng.choice(self.pool)
        company = rng.choice(self.companies)
        held = self._held(firm, company)
        beyond = [r for r in DELEGABLE_RIGHTS if r not in held]
        if held and (rng.random() < 0.9 or not beyond):
            scope = self._scope(held)
        else:  # on purpose beyond the firm's rights: refused 403 scope_exceeds_firm
            scope = sorted({*held[:1], rng.choice(beyond or list(DELEGABLE_RIGHTS))})
        self.grant(firm, email, company, scope, self._ends(), race=rng.random() < 0.15)

    # ---- reads -----------------------------------------------------------------------------

    def some_read(self) -> None:
        kind = self.rng.choices(list(READS), weights=list(READS.values()))[0]
        getattr(self, f"read_{kind}")()

    def read_evaluation(self) -> None:
        user, right, company = self._triple()
        self._read("evaluation", lambda: self.pep.post("/access/v1/evaluation", {
            "subject": {"type": "user", "id": user}, "action": {"name": right},
            "resource": {"type": "company", "id": company}}),
            lambda at: self.ref.holds(user, right, company, at), lambda body: body["decision"])

    def read_evaluations(self) -> None:
        one_user = self.rng.random() < 0.5  # a portal page: one user, many questions
        user = self.rng.choice(self.users)
        triples = [(user if one_user else u, r, c) for u, r, c in (self._triple() for _ in range(self.rng.randint(5, 40)))]
        semantic = self.rng.choice(["execute_all", "execute_all", "deny_on_first_deny", "permit_on_first_permit"])
        stop = {"execute_all": None, "deny_on_first_deny": False, "permit_on_first_permit": True}[semantic]
        items = [{"action": {"name": r}, "resource": {"type": "company", "id": c}} | (
            {} if one_user else {"subject": {"type": "user", "id": u}}) for u, r, c in triples]
        body: dict = {"evaluations": items, "options": {"evaluations_semantic": semantic}}
        if one_user:
            body["subject"] = {"type": "user", "id": user}

        def expected(at: datetime) -> list[bool]:
            answers = []
            for u, r, c in triples:
                answers.append(self.ref.holds(u, r, c, at))
                if stop is not None and answers[-1] is stop:
                    break
            return answers

        self._read("evaluations", lambda: self.pep.post("/access/v1/evaluations", body), expected,
                   lambda reply: [item["decision"] for item in reply["evaluations"]], len)

    def read_search_action(self) -> None:
        user, _, company = self._triple()
        self._read("search_action", lambda: self.pep.post("/access/v1/search/action", {
            "subject": {"type": "user", "id": user}, "resource": {"type": "company", "id": company}}),
            lambda at: self.ref.actions(user, company, at),
            lambda body: [item["name"] for item in body["results"]])

    def read_search_resource(self) -> None:
        user, right, _ = self._triple()
        self._read("search_resource", lambda: self.pep.post("/access/v1/search/resource", {
            "subject": {"type": "user", "id": user}, "action": {"name": right}, "resource": {"type": "company"}}),
            lambda at: self.ref.resources(user, right, self.companies, at),
            lambda body: [item["id"] for item in body["results"]])

    def read_search_subject(self) -> None:
        _, right, company = self._triple()
        self._read("search_subject", lambda: self.pep.post("/access/v1/search/subject", {
            "subject": {"type": "user"}, "action": {"name": right}, "resource": {"type": "company", "id": company}}),
            lambda at: self.ref.subjects(company, right, self.users, at),
            lambda body: [item["id"] for item in body["results"]])

    def read_explain(self) -> None:
        user, right, company = self._triple()
        self._read("explain", lambda: self.portal.post("/v1/explain", {
            "subject": {"type": "user", "id": user}, "action": {"name": right},
            "resource": {"type": "company", "id": company}}),
            lambda at: self.ref.holds(user, right, company, at), lambda body: body["decision"])

    def read_clients(self) -> None:
        firm = self.rng.choice(self.firms)
        manager = self.ref.managers.get(firm)
        if manager is None:
            return
        self._read("clients", lambda: self.portal.get(f"/v1/firms/{firm}/clients", user=manager),
                   lambda at: self.ref.firm_clients(firm, self.companies, at),
                   lambda body: {c["siret"]: c["scope"] for c in body["clients"]})

    def read_list_delegations(self) -> None:
        company = self.rng.choice(self.companies)
        actor = self._admin_of(company)
        links = [d for d in (*self.closed_delegations.values(), *self.ref.delegations.values()) if d.company == company]

        def expected(at: datetime) -> dict:
            return {d.id: (d.shown_status(at), sorted(d.scope), d.firm) for d in links}

        self._read("list_delegations", lambda: self.portal.get(f"/v1/companies/{company}/delegations", user=actor),
                   expected, lambda body: {d["id"]: (d["status"], d["scope"], d.get("firm")) for d in body["delegations"]})

    # ---- the thread --------------------------------------------------------------------------

    def run(self, deadline: float) -> None:
        """Reads and writes in the configured mix until ``deadline`` (time.monotonic())."""
        try:
            while time.monotonic() < deadline and not self.stopped:
                self.steps += 1
                if self.rng.random() < self.write_share:
                    self.some_write()
                    self.prune()
                else:
                    self.some_read()
        except Exception as exc:  # noqa: BLE001 - an answer the driver cannot read stops the lane, and fails the soak
            self.stopped = f"crashed: {type(exc).__name__}: {exc}"
            self.tally.error("lane", traceback.format_exc(limit=4))
