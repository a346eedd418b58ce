"""Property test: the service against an independent reference model.

A hypothesis state machine builds random delegation graphs THROUGH the management use
cases (companies, admins, designations, activations, changes, revocations,
collaborators, grants) while a settable clock moves forward (by a minute up to eight
days, or exactly onto an end date or a link expiry, or a second before), so end dates
and activation links expire under its feet. Every operation is mirrored in
``tests/property/reference.py``, a plain-Python model of the rules in
``/work/shared/domain.md``:

* each operation must be refused by the service iff the reference refuses it, with
  one of the error kinds the reference names (so a grant accepted by the service
  never exceeds what the firm held at that instant according to the reference);
* records returned by accepted operations must match the reference;
* after every step, every (user, right, company) whose reference answer changed is
  re-asked through ``Decisions.decide``, and one rotating ``actions``, ``resources``
  and ``subjects`` search is compared; all through one long-lived ``Decisions``, so
  its answer cache is exercised across writes, end dates and its 5-minute max age; each
  decision is asked of a second ``Decisions`` too, with its own cache, sharing the facts
  both read (two workers of one server, ``authz.shared_facts``);
* at the end of every example (teardown), EVERY (user, right, company) of the pools,
  with an unknown right and an unknown company, is compared through ``decide``, and
  every search (``actions``, ``resources``, ``subjects``: each with a fresh cache,
  so each computes by its own path; the firm's client list; admins; collaborators);
  plus the attenuation invariant on the service's answers alone: whoever is not admin
  of C and holds R on C is the manager or a collaborator of a firm that the service
  says holds R on C.

Comparing every triple after every step would cost ~0.5-0.8 s a step (300 policy
questions through the database); the changed-triples check after each step plus the
full check at the end keeps the SQLite run under a minute of CPU.

Small pools (5 people, 4 companies, 3 firms) make links collide. E-mails are lower
case: the use cases take normalised identifiers (the HTTP schemas normalise them).
A failing example is printed as the list of steps; re-run it with the printed seed.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from authz.decisions import Decisions
from authz.engine import Engine
from authz.errors import AuthzError, Conflict, Forbidden, Gone, InvalidInput, NotFound
from authz.shared_facts import SharedFacts
from authz.store import Database
from authz.tables import data_version, metadata
from authz.usecases import Management
from tests.property.reference import (
    CONFLICT,
    DELEGABLE,
    FORBIDDEN,
    GONE,
    INVALID,
    NOT_FOUND,
    PENDING,
    RIGHTS,
    Reference,
)
from tests.support import ROOT, Clock, as_user, siret

ENGINE = Engine(ROOT)

USERS = ("ana@alpha.example", "ben@beta.example", "cleo@gamma.example", "dan@delta.example", "eva@eps.example")
COMPANIES = tuple(siret(1_0000_0000_0100 + i) for i in range(4))
FIRMS = tuple(siret(2_0000_0000_0100 + i) for i in range(3))
UNKNOWN_COMPANY = siret(1_0000_0000_0999)  # never registered
UNKNOWN_RIGHT = "paie"                     # not in the policy
CHECK_RIGHTS = (*RIGHTS, UNKNOWN_RIGHT)
CHECK_COMPANIES = (*COMPANIES, UNKNOWN_COMPANY)
PAIRS = tuple((u, c) for c in CHECK_COMPANIES for u in USERS)

KIND = {Forbidden: FORBIDDEN, InvalidInput: INVALID, Conflict: CONFLICT, NotFound: NOT_FOUND, Gone: GONE}

# ---- strategies ------------------------------------------------------------------

# None stands for "the rightful person" (an admin of the company, the firm's manager,
# the person named in the designation ...); otherwise anyone of the pool.
actors = st.sampled_from((None,) * 10 + USERS)  # two thirds rightful
people = st.sampled_from(USERS)
companies = st.sampled_from(COMPANIES)
firms = st.sampled_from(FIRMS)
known_firms = st.none() | firms  # None: a firm that exists, if any
scopes = st.one_of(
    st.frozensets(st.sampled_from(RIGHTS), min_size=1, max_size=5),
    st.frozensets(st.sampled_from(CHECK_RIGHTS), max_size=3),  # may be empty or name an unknown right
)
delegation_scopes = st.one_of(st.frozensets(st.sampled_from(sorted(DELEGABLE)), min_size=1, max_size=5), scopes)
# End dates as whole minutes from now, so that clock moves hit them exactly; 0 and
# negative offsets must be refused. Moves and offsets of a minute or two stay under the
# answer cache's max age (5 min), so cached answers meet end dates, not only the max age.
end_offsets = st.one_of(st.none(), st.sampled_from([2, 60, 1440, 4320, 10080, 43200, 1, 0, -1440]))
moments = st.sampled_from(["now", "now", "expiry", "before"])  # when a link is followed
picks = st.integers(min_value=0, max_value=7)  # which link, counted from the most recent
clock_moves = st.sampled_from([1, 2, 60, 1440, 4320, 10080, 11520])  # minutes; 10080 = the activation TTL


class DelegationGraph(RuleBasedStateMachine):
    """Random delegation graphs built through the use cases, mirrored in the reference."""

    def __init__(self, open_database):
        super().__init__()
        self.db, self._close = open_database()
        self.clock = Clock()
        self.management = Management(self.db, lambda: ENGINE, clock=self.clock)
        # Two workers of one server: each its own answer cache, both sharing the facts they
        # read (``authz.shared_facts``). Every decision is asked of both, in turns first, so
        # each meets facts the other read before a change as well as after it.
        self._shared_folder = tempfile.mkdtemp(prefix="authz-property-facts-")
        shared = SharedFacts(f"{self._shared_folder}/facts.sqlite3")
        self.decisions = Decisions(self.db, lambda: ENGINE, clock=self.clock, shared=shared)
        self.other_worker = Decisions(self.db, lambda: ENGINE, clock=self.clock, shared=shared)
        self.ref = Reference()
        self.verified: dict[tuple[str, str, str], bool] = {}  # reference answers already checked
        self.steps = 0
        self.clean = True  # False while a step runs; the final check runs only after clean steps

    # ---- helpers -----------------------------------------------------------------

    def _attempt(self, what: str, reasons: set[str], call):
        """Run a use case; it must fail iff the reference refuses, with a kind it names."""
        self.clean = False
        try:
            result = call()
        except AuthzError as exc:
            kind = KIND.get(type(exc), type(exc).__name__)
            assert reasons, (
                f"{what}: the service refused ({kind}/{exc.code}: {exc.message} {exc.details}) "
                f"but the reference allows it"
            )
            assert kind in reasons, (
                f"{what}: the service refused with {kind}/{exc.code} ({exc.message}); "
                f"the reference expected one of {sorted(reasons)}"
            )
            return False, None
        assert not reasons, f"{what}: the service accepted it but the reference refuses it: {sorted(reasons)}"
        return True, result

    def _ends(self, offset):
        return None if offset is None else self.clock() + timedelta(minutes=offset)

    def _admin_of(self, company):
        admins = self.ref.admins.get(company)
        return min(admins) if admins else USERS[0]

    def _manager_of(self, firm):
        return self.ref.managers.get(firm, USERS[0])

    def _some_firm(self):
        return min(self.ref.managers) if self.ref.managers else FIRMS[0]

    def _pick(self, links: dict, pick: int):
        values = list(links.values())
        return values[-1 - pick % len(values)]

    def _held(self, firm, company):
        now = self.clock()
        return frozenset(r for r in RIGHTS if self.ref.firm_holds(firm, r, company, now))

    def _same_delegation(self, record, d):
        now = self.clock()
        got = (record.id, record.company, record.manager_email, record.firm, str(record.status),
               tuple(record.scope), record.ends_at)
        want = (d.id, d.company, d.manager_email, d.firm, d.shown_status(now), tuple(sorted(d.scope)), d.ends_at)
        assert got == want, f"delegation record {got} != reference {want}"

    def _same_grant(self, record, g):
        now = self.clock()
        got = (record.id, record.firm, record.collaborator, record.company, str(record.status),
               tuple(record.scope), record.ends_at)
        want = (g.id, g.firm, g.collaborator, g.company, g.shown_status(now), tuple(sorted(g.scope)), g.ends_at)
        assert got == want, f"grant record {got} != reference {want}"

    def _check_decision(self, user, right, company):
        now = self.clock()
        want = self.ref.holds(user, right, company, now)
        workers = (self.decisions, self.other_worker)
        for worker in workers if self.steps % 2 else reversed(workers):
            got = worker.decide(user, right, company)
            if got.allowed != want:
                explanation = worker.explain(user, right, company)
                raise AssertionError(
                    f"decide({user!r}, {right!r}, {company!r}) at {now.isoformat()}: service "
                    f"{got.allowed} ({got.reason}), reference {want}; explain: {explanation}"
                )

    # ---- companies and admins ----------------------------------------------------

    @rule(company=companies, admin=people)
    def register_company(self, company, admin):
        ok, record = self._attempt(
            "register_company", self.ref.refusals_register_company(company),
            lambda: self.management.register_company(as_user(admin), company, f"Entreprise {company}", admin),
        )
        if ok:
            self.ref.apply_register_company(company, admin)
            assert record.admins == (admin,)

    @rule(actor=actors, company=companies, email=people)
    def add_admin(self, actor, company, email):
        actor = actor or self._admin_of(company)
        ok, record = self._attempt(
            "add_admin", self.ref.refusals_add_admin(actor, company, email),
            lambda: self.management.add_admin(as_user(actor), company, email),
        )
        if ok:
            self.ref.apply_add_admin(company, email)
            assert record.admins == tuple(sorted(self.ref.admins[company]))

    @rule(actor=actors, company=companies, email=people)
    def remove_admin(self, actor, company, email):
        actor = actor or self._admin_of(company)
        ok, record = self._attempt(
            "remove_admin", self.ref.refusals_remove_admin(actor, company, email),
            lambda: self.management.remove_admin(as_user(actor), company, email),
        )
        if ok:
            self.ref.apply_remove_admin(company, email)
            assert record.admins == tuple(sorted(self.ref.admins[company]))

    # ---- delegations ---------------------------------------------------------------

    @rule(actor=actors, company=companies, manager=people, scope=delegation_scopes, ends=end_offsets)
    def designate(self, actor, company, manager, scope, ends):
        actor = actor or self._admin_of(company)
        now, ends_at = self.clock(), self._ends(ends)
        ok, designation = self._attempt(
            "designate", self.ref.refusals_designate(actor, company, manager, scope, ends_at, now),
            lambda: self.management.designate(as_user(actor), company, manager, scope, ends_at),
        )
        if ok:
            record = designation.delegation
            d = self.ref.apply_designate(
                record.id, designation.activation.token, company, manager, scope, ends_at, now
            )
            self._same_delegation(record, d)
            assert designation.activation.expires_at == d.link_expires_at

    @precondition(lambda self: self.ref.delegations)
    @rule(pick=picks, scope=delegation_scopes, ends=end_offsets, use_old_link=st.booleans(), firm=firms)
    def designate_again(self, pick, scope, ends, use_old_link, firm):
        """The company designates the same person again: the new link replaces a pending one,
        and the old link must never work again."""
        d = self._pick(self.ref.delegations, pick)
        self.designate(None, d.company, d.manager_email, scope, ends)
        if use_old_link:
            self._activate(d, d.manager_email, firm, d.token)

    @precondition(lambda self: self.ref.delegations)
    @rule(pick=picks, actor=actors, firm=firms, bogus=st.booleans(), when=moments)
    def activate(self, pick, actor, firm, bogus, when):
        """Follow a link, now or just at / a second before its expiry (the clock moves there)."""
        d = self._pick(self.ref.delegations, pick)
        if when != "now" and self.clock() < d.link_expires_at:
            moment = d.link_expires_at - (timedelta(seconds=1) if when == "before" else timedelta())
            self.clean = False
            self.clock.now = max(self.clock(), moment)
        token = "not-a-token-" + d.token if bogus else d.token
        self._activate(d, actor or d.manager_email, firm, token)

    def _activate(self, d, actor, firm, token):
        ok, record = self._attempt(
            "activate", self.ref.refusals_activate(actor, token, firm, self.clock()),
            lambda: self.management.activate(as_user(actor), token, firm, f"Cabinet {firm}"),
        )
        if ok:
            self._same_delegation(record, self.ref.apply_activate(actor, token, firm))

    @precondition(lambda self: self.ref.delegations)
    @rule(pick=picks, actor=actors, scope=st.none() | scopes, ends=end_offsets, clear=st.booleans())
    def change_delegation(self, pick, actor, scope, ends, clear):
        d = self._pick(self.ref.delegations, pick)
        self._change_delegation(d, actor or self._admin_of(d.company), scope, self._ends(ends), clear)

    def _change_delegation(self, d, actor, scope, ends_at, clear):
        ok, record = self._attempt(
            "change_delegation",
            self.ref.refusals_change_delegation(actor, d.id, scope, ends_at, clear, self.clock()),
            lambda: self.management.change_delegation(as_user(actor), d.id, scope, ends_at, clear),
        )
        if ok:
            self._same_delegation(record, self.ref.apply_change_delegation(d.id, scope, ends_at, clear))

    @precondition(lambda self: self.ref.delegations)
    @rule(pick=picks, actor=actors, by_firm=st.booleans())
    def revoke_delegation(self, pick, actor, by_firm):
        d = self._pick(self.ref.delegations, pick)
        if actor is None:
            actor = self._manager_of(d.firm) if by_firm and d.firm else self._admin_of(d.company)
        ok, record = self._attempt(
            "revoke_delegation", self.ref.refusals_revoke_delegation(actor, d.id),
            lambda: self.management.revoke_delegation(as_user(actor), d.id),
        )
        if ok:
            self._same_delegation(record, self.ref.apply_revoke_delegation(d.id))

    @rule(company=companies, manager=people, scope=delegation_scopes, ends=end_offsets, firm=firms, when=moments)
    def designate_then_activate(self, company, manager, scope, ends, firm, when="now"):
        """The usual path in one step: the admin designates, the named manager activates
        (at once, or when the link expires, or a second before)."""
        count = len(self.ref.delegations)
        self.designate(None, company, manager, scope, ends)
        if len(self.ref.delegations) > count:
            self.activate(0, None, firm, False, when)

    @initialize(
        admins=st.lists(people, min_size=2, max_size=len(COMPANIES)),
        links=st.lists(st.tuples(companies, people, delegation_scopes, end_offsets, firms), min_size=1, max_size=3),
        hires=st.lists(st.tuples(people, scopes), max_size=3),
    )
    def seed(self, admins, links, hires):
        """Start with a few companies, firms and grants in place, so that deep chains get exercised."""
        for company, admin in zip(COMPANIES, admins, strict=False):
            self.register_company(company, admin)
        for company, manager, scope, ends, firm in links:
            self.designate_then_activate(company, manager, scope, ends, firm)
        for collaborator, scope in hires:
            if self.ref.managers:
                self.hire_then_grant(0, collaborator, None, scope, None)

    # ---- firms ---------------------------------------------------------------------

    @rule(actor=actors, firm=known_firms, email=people)
    def add_collaborator(self, actor, firm, email):
        firm = firm or self._some_firm()
        actor = actor or self._manager_of(firm)
        ok, _ = self._attempt(
            "add_collaborator", self.ref.refusals_add_collaborator(actor, firm, email),
            lambda: self.management.add_collaborator(as_user(actor), firm, email),
        )
        if ok:
            self.ref.apply_add_collaborator(firm, email)

    @rule(actor=actors, firm=known_firms, email=st.none() | people)
    def remove_collaborator(self, actor, firm, email):
        live = [g for g in self.ref.grants.values() if g.in_force(self.clock()) and g.firm == (firm or g.firm)]
        firm = firm or (live[-1].firm if live else self._some_firm())
        if email is None:  # a collaborator of the firm, one holding a grant if any
            live = [g.collaborator for g in live if g.firm == firm]
            email = live[-1] if live else min(self.ref.collaborators.get(firm) or USERS[:1])
        actor = actor or self._manager_of(firm)
        ok, ended = self._attempt(
            "remove_collaborator", self.ref.refusals_remove_collaborator(actor, firm, email),
            lambda: self.management.remove_collaborator(as_user(actor), firm, email),
        )
        if ok:
            must, may = self.ref.apply_remove_collaborator(firm, email, self.clock())
            assert must <= set(ended) <= may, f"grants ended {sorted(ended)}: must {sorted(must)}, may {sorted(may)}"

    # ---- grants --------------------------------------------------------------------

    @rule(
        actor=actors, firm=known_firms, collaborator=st.none() | people, company=st.none() | companies,
        scope=scopes, clip=st.booleans(), ends=end_offsets,
    )
    def grant(self, actor, firm, collaborator, company, scope, clip, ends):
        firm = firm or self._some_firm()
        actor = actor or self._manager_of(firm)
        if collaborator is None:  # one of the firm's collaborators
            collaborator = min(self.ref.collaborators.get(firm) or USERS[:1])
        if company is None:  # a company on which the firm holds something
            company = next((c for c in COMPANIES if self._held(firm, c)), COMPANIES[0])
        if clip:  # stay within what the firm holds, so that most such grants pass
            held = self._held(firm, company)
            scope = (scope & held) or held or scope
        now, ends_at = self.clock(), self._ends(ends)
        reasons = self.ref.refusals_grant(actor, firm, collaborator, company, scope, ends_at, now)
        ok, record = self._attempt(
            "grant", reasons,
            lambda: self.management.grant(as_user(actor), firm, collaborator, company, scope, ends_at),
        )
        if ok:
            # No widening at write time: what was granted, the firm held at that instant.
            assert set(scope) <= self._held(firm, company), "grant exceeds what the firm holds"
            self._same_grant(record, self.ref.apply_grant(record.id, firm, collaborator, company, scope, ends_at))

    @precondition(lambda self: self.ref.managers)
    @rule(which=st.integers(0, len(FIRMS) - 1), collaborator=people, company=st.none() | companies, scope=scopes,
          ends=end_offsets)
    def hire_then_grant(self, which, collaborator, company, scope, ends):
        """The usual path in one step: the manager adds a collaborator and grants within the firm's rights."""
        existing = sorted(self.ref.managers)
        firm = existing[which % len(existing)]
        if collaborator not in self.ref.collaborators.get(firm, ()):
            self.add_collaborator(None, firm, collaborator)
        self.grant(None, firm, collaborator, company, scope, True, ends)

    @precondition(lambda self: self.ref.grants)
    @rule(pick=picks, actor=actors, scope=st.none() | scopes, clip=st.booleans(), ends=end_offsets,
          clear=st.booleans())
    def change_grant(self, pick, actor, scope, clip, ends, clear):
        g = self._pick(self.ref.grants, pick)
        if clip and scope is not None:
            held = self._held(g.firm, g.company)
            scope = (scope & held) or held or scope
        self._change_grant(g, actor or self._manager_of(g.firm), scope, self._ends(ends), clear)

    def _change_grant(self, g, actor, scope, ends_at, clear):
        ok, record = self._attempt(
            "change_grant", self.ref.refusals_change_grant(actor, g.id, scope, ends_at, clear, self.clock()),
            lambda: self.management.change_grant(as_user(actor), g.id, scope, ends_at, clear),
        )
        if ok:
            if scope is not None:
                assert set(scope) <= self._held(g.firm, g.company), "grant widened beyond the firm"
            self._same_grant(record, self.ref.apply_change_grant(g.id, scope, ends_at, clear))

    @precondition(lambda self: self.ref.grants)
    @rule(pick=picks, actor=actors)
    def revoke_grant(self, pick, actor):
        g = self._pick(self.ref.grants, pick)
        actor = actor or self._manager_of(g.firm)
        ok, record = self._attempt(
            "revoke_grant", self.ref.refusals_revoke_grant(actor, g.id),
            lambda: self.management.revoke_grant(as_user(actor), g.id),
        )
        if ok:
            self._same_grant(record, self.ref.apply_revoke_grant(g.id))

    # ---- time ----------------------------------------------------------------------

    @rule(minutes=clock_moves)
    def advance_clock(self, minutes):
        self.clean = False
        self.clock.advance(minutes=minutes)

    @precondition(lambda self: self.ref.delegations)
    @rule(pick=picks, early=st.booleans())
    def advance_to_a_deadline(self, pick, early):
        """Move the clock exactly onto a coming end date or link expiry (or a second before)."""
        now = self.clock()
        deadlines = sorted(
            {d.ends_at for d in self.ref.delegations.values() if d.ends_at and d.ends_at > now}
            | {d.link_expires_at for d in self.ref.delegations.values()
               if d.status == PENDING and d.link_expires_at > now}
            | {g.ends_at for g in self.ref.grants.values() if g.ends_at and g.ends_at > now}
        )
        if deadlines:
            self.clean = False
            deadline = deadlines[pick % len(deadlines)]
            self.clock.now = max(now, deadline - timedelta(seconds=1)) if early else deadline

    @precondition(lambda self: self.ref.delegations)
    @rule(pick=picks, on_grant=st.booleans(), minutes=st.sampled_from([2, 1, 4]), overshoot=st.booleans())
    def lapse_while_cached(self, pick, on_grant, minutes, overshoot):
        """Give a link in force an end date a few minutes ahead, ask about it (the answers
        get cached), then let the end date pass within the cache's max age."""
        now = self.clock()
        if on_grant:
            links = [g for g in self.ref.grants.values() if g.in_force(now)]
        else:
            links = [d for d in self.ref.delegations.values() if d.in_force(now)]
        if not links:
            return
        link = links[-1 - pick % len(links)]
        ends_at = now + timedelta(minutes=minutes)
        if on_grant:
            self._change_grant(link, self._manager_of(link.firm), None, ends_at, False)
            asked = [(link.collaborator, link.company)]
        else:
            self._change_delegation(link, self._admin_of(link.company), None, ends_at, False)
            staff = {self.ref.managers[link.firm], *self.ref.collaborators[link.firm]}
            asked = [(person, link.company) for person in sorted(staff)]
        self._check_searches(self.decisions, asked, [], [])
        self.clock.advance(minutes=minutes + (1 if overshoot else 0))

    # ---- checks --------------------------------------------------------------------

    @invariant()
    def decisions_follow_the_reference(self):
        """Re-ask every triple whose reference answer changed, and one rotating search.

        All through the long-lived ``Decisions`` (and its answer cache): the searches
        fill the cache by their own paths, which later decisions then read.
        """
        now = self.clock()
        answers = {(u, r, c): self.ref.holds(u, r, c, now) for u in USERS for r in RIGHTS for c in COMPANIES}
        for triple, held in answers.items():
            if self.verified.get(triple, False) != held:
                self._check_decision(*triple)
        self.verified = answers
        step, self.steps = self.steps, self.steps + 1
        user, company = PAIRS[step % len(PAIRS)]
        right = CHECK_RIGHTS[step % len(CHECK_RIGHTS)]
        self._check_searches(self.decisions, [(user, company)], [(user, right)], [(company, right)])
        self.clean = True

    def _check_searches(self, decisions, actions, resources, subjects):
        """Compare searches with the reference; return the service's actions by (user, company)."""
        now = self.clock()
        found = {}
        for user, company in actions:
            got = found[user, company] = decisions.actions(user, company)
            want = self.ref.actions(user, company, now)
            assert len(set(got)) == len(got) and sorted(got) == want, (
                f"actions({user}, {company}) = {got}, reference {want}"
            )
        for user, right in resources:
            got = decisions.resources(user, right)
            want = self.ref.resources(user, right, CHECK_COMPANIES, now)
            assert got == want, f"resources({user}, {right}) = {got}, reference {want}"
        for company, right in subjects:
            got = decisions.subjects(company, right)
            want = self.ref.subjects(company, right, USERS, now)
            assert got == want, f"subjects({company}, {right}) = {got}, reference {want}"
        return found

    def _fresh_decisions(self):
        """A Decisions with an empty answer cache: each search then computes by its own path."""
        return Decisions(self.db, lambda: ENGINE, clock=self.clock)

    def check_everything(self):
        """Every triple through decide, every search, and attenuation on the service's answers."""
        for user in USERS:
            for right in CHECK_RIGHTS:
                for company in CHECK_COMPANIES:
                    self._check_decision(user, right, company)
        # Every question in one batch: the rows of many users and companies read together.
        asked = [(u, r, c) for u in USERS for r in CHECK_RIGHTS for c in CHECK_COMPANIES]
        now = self.clock()
        for (u, r, c), got in zip(asked, self._fresh_decisions().decide_many(asked), strict=True):
            assert got.allowed == self.ref.holds(u, r, c, now), f"decide_many: {u} {r} {c} {got}"
        everyone = [(u, c) for u in USERS for c in CHECK_COMPANIES]
        actions = self._check_searches(self._fresh_decisions(), everyone, [], [])
        self._check_searches(self._fresh_decisions(), [], [(u, r) for u in USERS for r in CHECK_RIGHTS], [])
        self._check_searches(self._fresh_decisions(), [], [], [(c, r) for c in CHECK_COMPANIES for r in CHECK_RIGHTS])
        self.check_attenuation_on_service_answers(actions)

    def check_attenuation_on_service_answers(self, actions):
        """On the service's answers alone: a non-admin holds R on C only through a firm holding R on C.

        The firm's holdings come from its client list, its people from its collaborator
        list and manager, the admins from the company record (each also compared with
        the reference on the way).
        """
        now = self.clock()
        admins, holds, members = {}, {}, {}
        for company, ref_admins in self.ref.admins.items():
            record = self.management.get_company(as_user(min(ref_admins)), company)
            assert set(record.admins) == ref_admins, f"admins of {company}: {record.admins}"
            admins[company] = set(record.admins)
        for firm, manager in self.ref.managers.items():
            clients = self.management.clients(as_user(manager), firm)
            got = {client.siret: sorted(client.scope) for client in clients}
            want = self.ref.firm_clients(firm, COMPANIES, now)
            assert got == want, f"clients of {firm} = {got}, reference {want}"
            holds[firm] = {(c, r) for c, scope in got.items() for r in scope}
            collaborators = {r.email for r in self.management.collaborators(as_user(manager), firm)}
            assert collaborators == self.ref.collaborators[firm], f"collaborators of {firm}: {collaborators}"
            members[firm] = collaborators | {manager}
        for (user, company), rights in actions.items():
            for right in rights:
                if user in admins.get(company, ()):
                    continue
                assert right in DELEGABLE, f"{user} holds {right} on {company} without being its admin"
                assert any(user in members[firm] and (company, right) in holds[firm] for firm in holds), (
                    f"{user} holds {right} on {company}, but no firm of theirs holds it there"
                )

    def teardown(self):
        try:
            if self.clean:
                self.check_everything()
        finally:
            self._close()
            shutil.rmtree(self._shared_folder, ignore_errors=True)


# ---- databases -------------------------------------------------------------------


def sqlite_database():
    """A fresh SQLite file per example."""
    folder = tempfile.mkdtemp(prefix="authz-property-")
    database = Database(f"sqlite:///{folder}/authz.sqlite3")
    database.create_schema()

    def close():
        database.dispose()
        shutil.rmtree(folder, ignore_errors=True)

    return database, close


def emptied(database: Database):
    """The shared PostgreSQL database, emptied for the next example.

    Emptied as a fresh schema is: no rows but the data version's single row, which the
    answer cache relies on (without it, versions stay 0 and caches never forget).
    """

    def open_database():
        with database.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
            conn.execute(data_version.insert().values(id=1, version=0))
        return database, lambda: None

    return open_database


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_reference_knows_the_policy_rights():
    """The reference is written for the starting list of rights; a policy edit must update it."""
    assert ENGINE.rights == tuple(sorted(RIGHTS))
    assert ENGINE.info.delegable == DELEGABLE


def test_service_follows_the_reference_on_sqlite():
    run_state_machine_as_test(lambda: DelegationGraph(sqlite_database), settings=SETTINGS)


@pytest.mark.postgres
def test_service_follows_the_reference_on_postgres(postgres_url):
    database = Database(postgres_url)
    try:
        run_state_machine_as_test(
            lambda: DelegationGraph(emptied(database)), settings=settings(SETTINGS, max_examples=10)
        )
    finally:
        database.dispose()
