"""A realistic request stream over a loaded dataset: who asks what, about which company.

Questions are drawn from real rows of the database (company admins and their
companies, firm managers and their clients, collaborators and the companies of their
grants), plus people and companies the service has never heard of. Within each kind, a
Zipf-like law over a pool makes a few users and companies ask most of the questions, as
a portal's traffic does. The same database and seed always give the same stream.

Kinds (and the answer they usually get):

* ``admin``: a company admin about their company, any right (allow);
* ``admin_other``: a company admin about another company (deny: no_link);
* ``manager``: a firm manager about a client, a right of the delegation's scope (allow),
  or any link of the firm in any state (pending, revoked, lapsed: deny);
* ``manager_pending``: a manager about a company whose designation of them is still
  pending or expired unused (deny);
* ``manager_entreprise``: a manager asking for ``entreprise`` (deny: never delegable);
* ``manager_outside``: a manager about a right outside the delegation (deny);
* ``collaborator``: a collaborator about a company of one of their grants, any state
  (allow when the grant and the delegation are in force and both carry the right);
* ``collaborator_no_grant``: a collaborator about a client of the firm with no grant (deny);
* ``stranger``: an e-mail the service does not know (deny);
* ``unknown_company``: a valid SIRET nobody registered (deny);
* ``unknown_right``: a right the policy does not declare (deny).
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from authz.dataset import DELEGABLE
from authz.identifiers import with_luhn_digit
from authz.store import Database
from authz.tables import collaborators, companies, company_admins, delegations, firms, grants

RIGHTS = (*DELEGABLE, "entreprise")

MIX = (
    ("admin", 0.30),
    ("admin_other", 0.04),
    ("manager", 0.19),
    ("manager_pending", 0.01),
    ("manager_entreprise", 0.02),
    ("manager_outside", 0.03),
    ("collaborator", 0.30),
    ("collaborator_no_grant", 0.04),
    ("stranger", 0.03),
    ("unknown_company", 0.03),
    ("unknown_right", 0.01),
)
ZIPF_S = 1.05
POOL = 5_000  # rows per kind the Zipf law ranges over


@dataclass(frozen=True)
class Question:
    kind: str
    user: str
    right: str
    siret: str

    def as_evaluation(self) -> dict:
        return {
            "subject": {"type": "user", "id": self.user},
            "action": {"name": self.right},
            "resource": {"type": "company", "id": self.siret},
        }


class Zipf:
    """Ranks 0..n-1 with P(rank r) proportional to 1/(r+1)**s."""

    def __init__(self, n: int, s: float = ZIPF_S):
        self.cumulative = list(itertools.accumulate(1 / (r + 1) ** s for r in range(n)))

    def draw(self, rng: random.Random) -> int:
        return bisect.bisect_left(self.cumulative, rng.random() * self.cumulative[-1])


@dataclass
class Pools:
    """Rows drawn from the database, each list in a fixed (deterministic) order."""

    admin_pairs: list[tuple[str, str]]               # (email, siret)
    other_companies: list[str]
    manager_links: list[tuple[str, str, str, str]]   # (email, siret, status, scope)
    pending_links: list[tuple[str, str, str]]        # (manager email, siret, scope), not activated
    grant_rows: list[tuple[str, str, str]]           # (email, siret, scope)
    collaborator_clients: list[tuple[str, str]]      # (email, siret of a client without their grant)
    largest_manager: str
    largest_firm: str


def _scope(stored: str) -> list[str]:
    return stored.split() if stored else []


def load_pools(db: Database, pool: int = POOL) -> Pools:
    """Sample rows deterministically: SIRETs and ids are random, so 'the first N by key' is a sample."""
    with db.engine.connect() as conn:
        first_companies = select(companies.c.siret).order_by(companies.c.siret).limit(pool).subquery()
        admin_pairs = [
            (row.user_email, row.company_siret)
            for row in conn.execute(
                select(company_admins.c.user_email, company_admins.c.company_siret)
                .where(company_admins.c.company_siret.in_(select(first_companies.c.siret)))
                .order_by(company_admins.c.company_siret, company_admins.c.user_email)
            )
        ]
        other_companies = [
            row[0]
            for row in conn.execute(
                select(companies.c.siret).order_by(companies.c.siret.desc()).limit(pool)
            )
        ]
        # The firm with the most clients: its manager asks often (and gets searched).
        largest = conn.execute(
            select(delegations.c.firm_siret, func.count().label("n"))
            .where(delegations.c.firm_siret.is_not(None))
            .group_by(delegations.c.firm_siret)
            .order_by(func.count().desc(), delegations.c.firm_siret)
            .limit(1)
        ).one()
        largest_firm = largest.firm_siret
        largest_manager = conn.execute(select(firms.c.manager_email).where(firms.c.siret == largest_firm)).scalar_one()
        some_firms = [row[0] for row in conn.execute(select(firms.c.siret).order_by(firms.c.siret).limit(pool // 10))]
        firm_list = sorted({largest_firm, *some_firms})
        manager_links = [
            (row.manager_email, row.company_siret, row.status, row.scope)
            for row in conn.execute(
                select(firms.c.manager_email, delegations.c.company_siret, delegations.c.status, delegations.c.scope)
                .join(delegations, delegations.c.firm_siret == firms.c.siret)
                .where(firms.c.siret.in_(firm_list))
                .order_by(delegations.c.id)
                .limit(pool * 4)
            )
        ]
        pending_links = [
            (row.manager_email, row.company_siret, row.scope)
            for row in conn.execute(
                select(delegations.c.manager_email, delegations.c.company_siret, delegations.c.scope)
                .join(firms, firms.c.manager_email == delegations.c.manager_email)
                .where(delegations.c.status == "pending")
                .order_by(delegations.c.id)
                .limit(pool)
            )
        ]
        grant_rows = [
            (row.collaborator_email, row.company_siret, row.scope)
            for row in conn.execute(
                select(grants.c.collaborator_email, grants.c.company_siret, grants.c.scope)
                .order_by(grants.c.id)
                .limit(pool * 2)
            )
        ]
        granted = {(email, siret) for email, siret, _ in grant_rows}
        some_collaborators = select(collaborators.c.user_email, collaborators.c.firm_siret).order_by(
            collaborators.c.user_email
        ).limit(pool // 5).subquery()
        collaborator_clients = [
            (row.user_email, row.company_siret)
            for row in conn.execute(
                select(some_collaborators.c.user_email, delegations.c.company_siret)
                .join(delegations, delegations.c.firm_siret == some_collaborators.c.firm_siret)
                .order_by(some_collaborators.c.user_email, delegations.c.company_siret)
                .limit(pool * 2)
            )
            if (row.user_email, row.company_siret) not in granted
        ]
        known = set(conn.execute(select(companies.c.siret).where(companies.c.siret.in_(other_companies))).scalars())
        assert known == set(other_companies)
    return Pools(admin_pairs, other_companies, manager_links, pending_links, grant_rows, collaborator_clients,
                 largest_manager, largest_firm)


def _unknown_sirets(db: Database, rng: random.Random, n: int) -> list[str]:
    candidates = sorted({with_luhn_digit(f"{rng.randrange(10**12, 10**13)}") for _ in range(n * 2)})
    with db.engine.connect() as conn:
        taken = set(conn.execute(select(companies.c.siret).where(companies.c.siret.in_(candidates))).scalars())
    return [siret for siret in candidates if siret not in taken][:n]


def build_stream(db: Database, n: int, seed: int = 1, pools: Pools | None = None) -> list[Question]:
    """``n`` questions, skewed (Zipf) within each kind, mixed by ``MIX``; same seed, same stream."""
    pools = pools or load_pools(db)
    rng = random.Random(f"stream:{seed}")
    unknown = _unknown_sirets(db, rng, 500)
    zipfs: dict[int, Zipf] = {}

    def pick(rows: list):
        size = len(rows)
        if size not in zipfs:
            zipfs[size] = Zipf(size)
        return rows[zipfs[size].draw(rng)]

    # Shuffle each pool once (deterministically) so popularity is not tied to key order.
    for rows in (pools.admin_pairs, pools.other_companies, pools.manager_links, pools.pending_links, pools.grant_rows,
                 pools.collaborator_clients):
        rng.shuffle(rows)
    # The largest firm's manager is among the busiest users.
    largest = [link for link in pools.manager_links if link[0] == pools.largest_manager]
    others = [link for link in pools.manager_links if link[0] != pools.largest_manager]
    pools.manager_links[:] = largest[:50] + others + largest[50:]
    strangers = [f"visitor{i}@inconnu-{i % 97}.example" for i in range(1000)]

    kinds, weights = zip(*MIX, strict=True)
    out: list[Question] = []
    for kind in rng.choices(kinds, weights, k=n):
        if kind == "admin":
            email, siret = pick(pools.admin_pairs)
            out.append(Question(kind, email, rng.choice(RIGHTS), siret))
        elif kind == "admin_other":
            email, _ = pick(pools.admin_pairs)
            out.append(Question(kind, email, rng.choice(RIGHTS), pick(pools.other_companies)))
        elif kind == "manager_pending" and pools.pending_links:
            email, siret, scope = pick(pools.pending_links)
            out.append(Question(kind, email, rng.choice(_scope(scope) or list(DELEGABLE)), siret))
        elif kind.startswith("manager"):
            email, siret, _status, scope = pick(pools.manager_links)
            held = _scope(scope)
            if kind == "manager_entreprise":
                right = "entreprise"
            elif kind == "manager_outside":
                outside = [r for r in DELEGABLE if r not in held]
                right = rng.choice(outside or list(DELEGABLE))
            else:
                right = rng.choice(held or list(DELEGABLE))
            out.append(Question(kind, email, right, siret))
        elif kind == "collaborator":
            email, siret, scope = pick(pools.grant_rows)
            held = _scope(scope)
            right = rng.choice(held) if held and rng.random() < 0.85 else rng.choice(RIGHTS)
            out.append(Question(kind, email, right, siret))
        elif kind == "collaborator_no_grant":
            email, siret = pick(pools.collaborator_clients) if pools.collaborator_clients else pick(pools.admin_pairs)
            out.append(Question(kind, email, rng.choice(DELEGABLE), siret))
        elif kind == "stranger":
            out.append(Question(kind, pick(strangers), rng.choice(RIGHTS), pick(pools.other_companies)))
        elif kind == "unknown_company":
            email, _ = pick(pools.admin_pairs)
            out.append(Question(kind, email, rng.choice(RIGHTS), rng.choice(unknown)))
        else:
            email, siret = pick(pools.admin_pairs)
            out.append(Question(kind, email, rng.choice(("paie", "sinistres", "Declarations")), siret))
    return out


def distinct_questions(stream: list[Question], n: int, seed: int = 2) -> list[Question]:
    """Up to ``n`` questions in which no user and no company occurs twice (cold decisions:
    whatever a cache keeps per user, per company or per pair, none of it helps)."""
    rng = random.Random(f"distinct:{seed}")
    users: set[str] = set()
    sirets: set[str] = set()
    out = []
    for question in rng.sample(stream, len(stream)):
        if question.user not in users and question.siret not in sirets:
            users.add(question.user)
            sirets.add(question.siret)
            out.append(question)
            if len(out) == n:
                break
    return out


def write_bodies(stream: list[Question], path: Path) -> Path:
    """One JSON evaluation body per line (for the wrk script)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for question in stream:
            out.write(json.dumps(question.as_evaluation(), separators=(",", ":")) + "\n")
    return path


def write_batches(stream: list[Question], path: Path, per_call: int = 100) -> Path:
    """One /access/v1/evaluations body per line, ``per_call`` items each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, len(stream) - per_call + 1, per_call):
            items = [q.as_evaluation() for q in stream[start : start + per_call]]
            out.write(json.dumps({"evaluations": items}, separators=(",", ":")) + "\n")
    return path
