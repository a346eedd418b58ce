"""A synthetic, seeded dataset at regional or national scale, for size tests and benchmarks.

``load_dataset(db, size, seed=...)`` writes rows straight into the tables (no use case,
no audit record): companies with one or two admins, accounting firms whose client
portfolios follow a long tail (median about 15 clients, the largest 10,000+ at national
scale), the firms' collaborators and their grants, and a realistic share of links that
no longer carry anything: pending designations (with a token hash and an activation
deadline, some past), revoked delegations and grants, and links whose end date has
passed (stored ``active``; the clock makes them lapse).

The same ``size`` and ``seed`` always give the same companies, people, links and scopes;
dates are placed relative to ``now`` (the load time by default), so that "pending",
"lapsed" and "in force" mean the same thing whenever the dataset is loaded.

Scopes follow the policy: a delegation carries a non-empty subset of the delegable
rights (never ``entreprise``); a grant carries a subset of its firm's delegation scope,
except a small share that exceeds it (written before the company narrowed the
delegation: the attenuation rule must deny the excess at decision time).

Rows go in with SQLAlchemy Core ``insert()`` executemany, in chunks, one transaction per
table; on PostgreSQL ``COPY`` through the driver connection is used instead (``method``).
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import column as sql_column
from sqlalchemy import func, insert, select, text
from sqlalchemy import table as sql_table

from authz import audit
from authz.identifiers import with_luhn_digit
from authz.store import Database
from authz.tables import (
    collaborators,
    companies,
    company_admins,
    delegations,
    firms,
    grants,
    users,
    utcnow,
)

# Bump when the generated content changes: benchmark caches compare it.
DATASET_VERSION = 1
DEFAULT_SEED = 20260302

# The delegable rights (policies.polar `delegable`): `entreprise` is never delegated.
DELEGABLE = ("attestations", "compte", "conges", "cotisations", "declarations", "intemperies", "salaries")

# Usual bundles a company hands its firm, with weights; the rest are random subsets.
BUNDLES = (
    (("attestations", "compte", "conges", "cotisations", "declarations", "intemperies", "salaries"), 30),
    (("compte", "cotisations", "declarations"), 18),
    (("compte", "conges", "cotisations", "declarations", "salaries"), 14),
    (("compte", "declarations"), 8),
    (("conges", "intemperies", "salaries"), 6),
    (("attestations", "compte"), 4),
)
RANDOM_BUNDLE_WEIGHT = 20


@dataclass(frozen=True)
class Size:
    """Target volumes of one dataset size."""

    companies: int
    firms: int
    collaborators: int
    grants: int
    largest_firm: int  # client links of the largest firm (any status; ~70% carry a given right now)
    median_clients: int = 17  # client links; about 15 of them active


# Sizes are chosen for the growth benchmark (~10k, ~100k, ~1M grants) as much as for realism.
# 25,000 firms with a median of ~15 clients make ~2 firm links per company (~1.8 in force):
# the domain lets a company designate several firms, each for different rights; ~14% have none.
SIZES: dict[str, Size] = {
    # a test fixture
    "small": Size(companies=1_000, firms=100, collaborators=400, grants=4_000, largest_firm=150),
    # a regional fund (~25,000 companies), sub-delegation still rare: ~10k grants
    "medium": Size(companies=25_000, firms=2_500, collaborators=2_500, grants=10_000, largest_firm=1_500),
    # ~100k grants
    "large": Size(companies=50_000, firms=5_000, collaborators=10_000, grants=100_000, largest_firm=3_000),
    # the national network: 250,000 companies, 25,000 firms, 1,000,000 grants
    "national": Size(companies=250_000, firms=25_000, collaborators=100_000, grants=1_000_000, largest_firm=15_000),
}

# Shares of the links, by state (fractions of the company-firm pairs).
DELEGATION_MIX = (
    ("active", 0.80),           # in force, most without end date
    ("active_lapsed", 0.05),    # stored active, ends_at past
    ("revoked", 0.08),          # revoked by the company or renounced by the firm
    ("pending", 0.04),          # designated, link still valid
    ("pending_expired", 0.03),  # designated, link never used and now past its deadline
)
GRANT_MIX = (
    ("active", 0.86),
    ("active_lapsed", 0.05),
    ("revoked", 0.09),
)
EXCEEDING_GRANT_SHARE = 0.05   # grants wider than their firm's current delegation
HISTORY_SHARE = 0.06           # pairs that also carry an older, revoked delegation
NEW_MANAGER_PENDING_SHARE = 0.01  # companies designating a manager with no account yet
TWO_ADMINS_SHARE = 0.30
HOLDING_SHARE = 0.01           # companies whose second admin also runs another company

FIRST_NAMES = (
    "alice", "armand", "bruno", "chloe", "damien", "elise", "fabien", "gaelle", "hugo", "ines",
    "jules", "karine", "louis", "manon", "nicolas", "oceane", "pierre", "quentin", "romain", "sophie",
    "thomas", "ursule", "valentin", "william", "xavier", "yasmine", "zoe", "camille", "lea", "mathis",
)
LAST_NAMES = (
    "martin", "bernard", "dubois", "thomas", "robert", "richard", "petit", "durand", "leroy", "moreau",
    "simon", "laurent", "lefebvre", "michel", "garcia", "david", "bertrand", "roux", "vincent", "fournier",
    "morel", "girard", "andre", "lefevre", "mercier", "dupont", "lambert", "bonnet", "francois", "martinez",
    "legrand", "garnier", "faure", "rousseau", "blanc", "guerin", "muller", "henry", "roussel", "nicolas",
)
TRADES = (
    "Maçonnerie", "Charpente", "Couverture", "Plomberie", "Électricité", "Menuiserie", "Peinture",
    "Carrelage", "Terrassement", "Plâtrerie", "Serrurerie", "Chauffage", "Travaux publics", "Isolation",
)


@dataclass
class LoadSummary:
    size: str
    seed: int
    counts: dict[str, int]
    elapsed: float
    method: str
    details: dict[str, object] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{table:15} {count:>10,}" for table, count in self.counts.items()]
        out += [f"{key}: {value}" for key, value in self.details.items()]
        return out


# ---- generation ------------------------------------------------------------------------------


def _rng(seed: int, part: str) -> random.Random:
    """One generator per part, so each table's rows do not depend on the order of the others."""
    return random.Random(f"{seed}:{part}")


def _weighted(rng: random.Random, mix: tuple[tuple[str, float], ...]) -> str:
    pick = rng.random()
    for name, share in mix:
        pick -= share
        if pick < 0:
            return name
    return mix[-1][0]


def _scope(rng: random.Random) -> tuple[str, ...]:
    total = sum(w for _, w in BUNDLES) + RANDOM_BUNDLE_WEIGHT
    pick = rng.uniform(0, total)
    for bundle, weight in BUNDLES:
        pick -= weight
        if pick < 0:
            return bundle
    return tuple(sorted(rng.sample(DELEGABLE, rng.randint(1, len(DELEGABLE)))))


def _sub_scope(rng: random.Random, scope: tuple[str, ...], exceed: bool) -> tuple[str, ...]:
    chosen = set(rng.sample(scope, rng.randint(1, len(scope))))
    outside = [right for right in DELEGABLE if right not in scope]
    if exceed and outside:
        chosen.update(rng.sample(outside, rng.randint(1, min(2, len(outside)))))
    return tuple(sorted(chosen))


def _id(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


def _portfolios(rng: random.Random, size: Size) -> list[int]:
    """Client links per firm: log-normal around the median, plus a Pareto head of big firms."""
    sigma = 0.45
    mu = math.log(size.median_clients)
    cap = max(size.median_clients * 4, size.largest_firm // 20)
    counts = [max(1, min(cap, round(rng.lognormvariate(mu, sigma)))) for _ in range(size.firms)]
    head = max(3, size.firms // 200)
    for rank in range(head):
        counts[rank] = max(counts[rank], round(size.largest_firm / (rank + 1) ** 1.1))
    return [min(count, size.companies) for count in counts]


@dataclass
class _Link:
    """A company-firm pair and its current delegation."""

    company: int
    firm: int
    state: str
    scope: tuple[str, ...]
    created: datetime
    ends_at: datetime | None


class Generator:
    """The whole dataset of one size and seed, produced table by table as row tuples."""

    def __init__(self, size: str, seed: int = DEFAULT_SEED, now: datetime | None = None):
        if size not in SIZES:
            raise ValueError(f"unknown dataset size {size!r}; choose one of {', '.join(SIZES)}")
        self.name = size
        self.size = SIZES[size]
        self.seed = seed
        self.now = (now or datetime.now(UTC)).replace(microsecond=0)
        self._people()
        self._links()

    # -- companies, firms and people --

    def _people(self) -> None:
        s = self.size
        rng = _rng(self.seed, "sirets")
        prefixes = rng.sample(range(10**12, 10**13), s.companies + s.firms)
        sirets = [with_luhn_digit(str(prefix)) for prefix in prefixes]
        self.company_sirets = sirets[: s.companies]
        self.firm_sirets = sirets[s.companies :]

        rng = _rng(self.seed, "companies")
        self.company_names = []
        self.admins: list[list[str]] = []
        for index in range(s.companies):
            last = rng.choice(LAST_NAMES)
            self.company_names.append(f"{rng.choice(TRADES)} {last.capitalize()} {index}")
            domain = f"{last}-{index}.example"
            first = rng.choice(FIRST_NAMES)
            found = [f"{first}.{rng.choice(LAST_NAMES)}@{domain}"]
            if rng.random() < TWO_ADMINS_SHARE:
                second = rng.choice([name for name in FIRST_NAMES if name != first])
                found.append(f"{second}.{rng.choice(LAST_NAMES)}@{domain}")
            self.admins.append(found)
        # Holdings: a few companies' second admin is the first admin of another company.
        for index in rng.sample(range(s.companies), max(1, int(s.companies * HOLDING_SHARE))):
            other = rng.randrange(s.companies)
            if other != index:
                self.admins[index] = [self.admins[index][0], self.admins[other][0]]

        rng = _rng(self.seed, "firms")
        self.firm_names, self.managers, self.firm_domains = [], [], []
        for index in range(s.firms):
            last = rng.choice(LAST_NAMES)
            self.firm_names.append(f"Cabinet {last.capitalize()} {index}")
            domain = f"cabinet-{last}-{index}.example"
            self.firm_domains.append(domain)
            self.managers.append(f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}@{domain}")

    # -- delegations --

    def _links(self) -> None:
        s = self.size
        rng = _rng(self.seed, "links")
        self.portfolios = _portfolios(rng, s)
        self.links: list[_Link] = []
        for firm, count in enumerate(self.portfolios):
            for company in rng.sample(range(s.companies), count):
                state = _weighted(rng, DELEGATION_MIX)
                created = self.now - timedelta(days=rng.randint(10, 2000), seconds=rng.randint(0, 86399))
                if state.startswith("pending"):
                    created = self.now - timedelta(days=rng.randint(0, 6), hours=rng.randint(0, 23))
                    if state == "pending_expired":
                        created = self.now - timedelta(days=rng.randint(8, 60))
                ends_at = None
                if state == "active_lapsed":
                    ends_at = self.now - timedelta(days=rng.randint(1, 365))
                elif state == "active" and rng.random() < 0.10:
                    ends_at = self.now + timedelta(days=rng.randint(400, 1500))
                self.links.append(_Link(company, firm, state, _scope(rng), created, ends_at))
        # Collaborators per firm, in proportion to its portfolio (at least one).
        total = sum(self.portfolios)
        floor = 1 if s.collaborators >= s.firms else 0
        self.staff = [max(floor, round(s.collaborators * count / total)) for count in self.portfolios]
        excess = sum(self.staff) - s.collaborators
        order = sorted(range(s.firms), key=lambda f: -self.staff[f])
        while excess > 0:
            trimmed = False
            for firm in order:
                if excess > 0 and self.staff[firm] > 1:
                    self.staff[firm] -= 1
                    excess -= 1
                    trimmed = True
            if not trimmed:
                break
        self.collaborator_emails: list[list[str]] = []
        rng = _rng(self.seed, "collaborators")
        for firm, count in enumerate(self.staff):
            domain = self.firm_domains[firm]
            self.collaborator_emails.append(
                [f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}.{n}@{domain}" for n in range(count)]
            )

    # -- row producers (tuples in column order) --

    def company_rows(self) -> Iterator[tuple]:
        rng = _rng(self.seed, "company-dates")
        for siret, name in zip(self.company_sirets, self.company_names, strict=True):
            yield (siret, name, self.now - timedelta(days=rng.randint(30, 4000)))

    def user_rows(self) -> Iterator[tuple]:
        seen: set[str] = set()
        rng = _rng(self.seed, "user-dates")
        for email in self._all_users():
            if email not in seen:
                seen.add(email)
                yield (email, self.now - timedelta(days=rng.randint(10, 3000)))

    def _all_users(self) -> Iterator[str]:
        for found in self.admins:
            yield from found
        yield from self.managers
        for found in self.collaborator_emails:
            yield from found

    def admin_rows(self) -> Iterator[tuple]:
        rng = _rng(self.seed, "admin-dates")
        for siret, found in zip(self.company_sirets, self.admins, strict=True):
            for email in found:
                yield (siret, email, self.now - timedelta(days=rng.randint(10, 3000)))

    def firm_rows(self) -> Iterator[tuple]:
        rng = _rng(self.seed, "firm-dates")
        for siret, name, manager in zip(self.firm_sirets, self.firm_names, self.managers, strict=True):
            yield (siret, name, manager, self.now - timedelta(days=rng.randint(30, 4000)))

    def collaborator_rows(self) -> Iterator[tuple]:
        rng = _rng(self.seed, "collaborator-dates")
        for firm, found in enumerate(self.collaborator_emails):
            for email in found:
                yield (self.firm_sirets[firm], email, self.now - timedelta(days=rng.randint(1, 2000)))

    def _token_hash(self, n: int) -> str:
        return hashlib.sha256(f"authz-dataset:{self.seed}:{self.name}:{n}".encode()).hexdigest()

    def delegation_rows(self) -> Iterator[tuple]:
        """(id, company, manager_email, firm, status, scope, token_hash, token_expires_at,
        ends_at, created_at, updated_at, activated_at, revoked_at)"""
        rng = _rng(self.seed, "delegation-rows")
        ttl = timedelta(days=7)
        token = 0
        for link in self.links:
            company = self.company_sirets[link.company]
            manager = self.managers[link.firm]
            firm = self.firm_sirets[link.firm]
            scope = " ".join(link.scope)
            created = link.created
            token += 1
            if rng.random() < HISTORY_SHARE and not link.state.startswith("pending"):
                # An older delegation of the same pair, revoked before the current one.
                old_created = created - timedelta(days=rng.randint(30, 700))
                revoked = created - timedelta(days=rng.randint(1, 29))
                yield (_id(rng), company, manager, firm, "revoked", " ".join(_scope(rng)), self._token_hash(token),
                       old_created + ttl, None, old_created, revoked, old_created + timedelta(hours=5), revoked)
                token += 1
            if link.state.startswith("pending"):
                yield (_id(rng), company, manager, None, "pending", scope, self._token_hash(token),
                       created + ttl, None, created, created, None, None)
                continue
            activated = created + timedelta(hours=rng.randint(1, 120))
            if link.state == "revoked":
                revoked = activated + timedelta(days=rng.randint(1, 300))
                revoked = min(revoked, self.now - timedelta(hours=1))
                yield (_id(rng), company, manager, firm, "revoked", scope, self._token_hash(token),
                       created + ttl, link.ends_at, created, revoked, activated, revoked)
                continue
            updated = activated if rng.random() < 0.8 else activated + timedelta(days=rng.randint(1, 200))
            yield (_id(rng), company, manager, firm, "active", scope, self._token_hash(token),
                   created + ttl, link.ends_at, created, min(updated, self.now), activated, None)
        # Designations of a manager who has no firm account yet (pending, some expired).
        for index in rng.sample(range(self.size.companies), int(self.size.companies * NEW_MANAGER_PENDING_SHARE)):
            token += 1
            days = rng.randint(0, 20)
            created = self.now - timedelta(days=days, hours=rng.randint(0, 23))
            manager = f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}@nouveau-cabinet-{index}.example"
            yield (_id(rng), self.company_sirets[index], manager, None, "pending", " ".join(_scope(rng)),
                   self._token_hash(token), created + ttl, None, created, created, None, None)

    def grant_rows(self) -> Iterator[tuple]:
        """(id, firm, collaborator_email, company, status, scope, ends_at, created_at, updated_at, revoked_at)"""
        rng = _rng(self.seed, "grants")
        by_firm: list[list[_Link]] = [[] for _ in range(self.size.firms)]
        for link in self.links:
            if not link.state.startswith("pending"):
                by_firm[link.firm].append(link)
        quotas = _grant_quotas([len(found) for found in by_firm], self.staff, self.size.grants)
        for firm, found in enumerate(by_firm):
            quota = quotas[firm]
            if not quota:
                continue
            staff = self.collaborator_emails[firm]
            firm_siret = self.firm_sirets[firm]
            for cell in rng.sample(range(len(staff) * len(found)), quota):
                link = found[cell % len(found)]
                email = staff[cell // len(found)]
                state = _weighted(rng, GRANT_MIX)
                scope = _sub_scope(rng, link.scope, exceed=rng.random() < EXCEEDING_GRANT_SHARE)
                created = link.created + timedelta(days=rng.randint(1, 400))
                created = min(created, self.now - timedelta(hours=2))
                ends_at = None
                if state == "active_lapsed":
                    ends_at = self.now - timedelta(days=rng.randint(1, 300))
                elif state == "active" and rng.random() < 0.05:
                    ends_at = self.now + timedelta(days=rng.randint(400, 1500))
                revoked = None
                if state == "revoked":
                    revoked = min(created + timedelta(days=rng.randint(1, 300)), self.now - timedelta(hours=1))
                status = "revoked" if state == "revoked" else "active"
                yield (_id(rng), firm_siret, email, self.company_sirets[link.company], status, " ".join(scope),
                       ends_at, created, revoked or created, revoked)

    def details(self) -> dict[str, object]:
        active_clients = [0] * self.size.firms
        for link in self.links:
            if link.state.startswith("active"):
                active_clients[link.firm] += 1
        states: dict[str, int] = {}
        for link in self.links:
            states[link.state] = states.get(link.state, 0) + 1
        largest = max(range(self.size.firms), key=lambda f: self.portfolios[f])
        return {
            "firm clients (links) median/max": f"{statistics.median(self.portfolios):g} / {max(self.portfolios)}",
            "firm active clients median/max": f"{statistics.median(active_clients):g} / {max(active_clients)}",
            "largest firm": f"{self.firm_sirets[largest]} manager {self.managers[largest]}",
            "link states": ", ".join(f"{k}={v}" for k, v in sorted(states.items())),
        }


def _grant_quotas(links: list[int], staff: list[int], target: int) -> list[int]:
    """Grants per firm: proportional to its links, capped at staff x links, summing to ~target."""
    caps = [n * k for n, k in zip(links, staff, strict=True)]
    low, high = 0.0, float(max(target, 1))
    for _ in range(60):
        ratio = (low + high) / 2
        if sum(min(cap, round(ratio * n)) for n, cap in zip(links, caps, strict=True)) < target:
            low = ratio
        else:
            high = ratio
    return [min(cap, round(high * n)) for n, cap in zip(links, caps, strict=True)]


# ---- writing -------------------------------------------------------------------------------------

COLUMNS = {
    companies: ("siret", "name", "created_at"),
    users: ("email", "created_at"),
    company_admins: ("company_siret", "user_email", "created_at"),
    firms: ("siret", "name", "manager_email", "created_at"),
    collaborators: ("firm_siret", "user_email", "created_at"),
    delegations: ("id", "company_siret", "manager_email", "firm_siret", "status", "scope", "token_hash",
                  "token_expires_at", "ends_at", "created_at", "updated_at", "activated_at", "revoked_at"),
    grants: ("id", "firm_siret", "collaborator_email", "company_siret", "status", "scope", "ends_at",
             "created_at", "updated_at", "revoked_at"),
}
CHUNK = 10_000
SQLITE_CACHE_KIB = 512 * 1024


def _chunks(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _insert(db: Database, table, rows: Iterable[tuple]) -> int:
    """SQLAlchemy Core executemany, CHUNK rows at a time, in one transaction.

    The statement targets a lightweight ``table()`` of untyped columns and the dates go in
    already in their stored form (naive UTC; on SQLite the text SQLAlchemy's DATETIME
    writes), so no per-value type processing runs: half the load time at this size.
    """
    names = COLUMNS[table]
    statement = insert(sql_table(table.name, *(sql_column(name) for name in names)))
    stored = _sqlite_text if db.is_sqlite else _naive
    count = 0
    with db.engine.connect() as conn:
        if db.is_sqlite:
            # Random keys land all over the indexes: a page cache that holds them saves the disk.
            conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            conn.commit()
            conn = conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            for chunk in _chunks(rows, CHUNK):
                conn.execute(
                    statement,
                    [{name: stored(value) for name, value in zip(names, row, strict=True)} for row in chunk],
                )
                count += len(chunk)
    return count


def _naive(value):
    """Naive UTC, as ``UTCDateTime`` stores it."""
    return value.astimezone(UTC).replace(tzinfo=None) if isinstance(value, datetime) else value


def _sqlite_text(value):
    """The text SQLAlchemy's SQLite DATETIME stores for a naive UTC value."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


def _copy(db: Database, table, rows: Iterable[tuple]) -> int:
    """PostgreSQL COPY through psycopg's connection, in one transaction (naive UTC, as stored)."""
    names = COLUMNS[table]
    count = 0
    with db.engine.connect() as conn, conn.begin():
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor, cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(_naive(value) for value in row))
                count += 1
    return count


def load_dataset(
    db: Database,
    size: str,
    seed: int = DEFAULT_SEED,
    now: datetime | None = None,
    method: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> LoadSummary:
    """Generate the ``size`` dataset with ``seed`` and write it into an empty, migrated database.

    ``method``: "insert" (SQLAlchemy Core executemany), "copy" (PostgreSQL only), or
    "auto" (COPY on PostgreSQL, executemany on SQLite). Refuses a database that already
    holds companies, so it never mixes two datasets.
    """
    if method == "auto":
        method = "insert" if db.is_sqlite else "copy"
    if method == "copy" and db.is_sqlite:
        raise ValueError("COPY needs PostgreSQL")
    with db.engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(companies)).scalar():
            raise ValueError("the database already holds companies; load a dataset into an empty one")
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    generator = Generator(size, seed, now)
    say(f"generated the {size} plan in {time.perf_counter() - started:.1f}s")
    write = _insert if method == "insert" else _copy
    counts: dict[str, int] = {}
    for table, rows in (
        (companies, generator.company_rows()),
        (users, generator.user_rows()),
        (company_admins, generator.admin_rows()),
        (firms, generator.firm_rows()),
        (collaborators, generator.collaborator_rows()),
        (delegations, generator.delegation_rows()),
        (grants, generator.grant_rows()),
    ):
        began = time.perf_counter()
        counts[table.name] = write(db, table, rows)
        say(f"{table.name}: {counts[table.name]:,} rows in {time.perf_counter() - began:.1f}s")
    # One audit record for the whole load, naming no company: caches keyed on the data
    # version, and the impact census (authz.census), learn that everything changed.
    with db.transaction() as tx:
        audit.record(tx, audit.Context(), utcnow(), "dataset.load", size=size, seed=seed, rows=counts)
    if not db.is_sqlite:
        # What autovacuum does soon after a bulk load (it vacuums insert-only tables too,
        # since PostgreSQL 13): statistics for the planner, and the visibility map, without
        # which every index-only scan also reads the table. VACUUM runs outside a transaction.
        began = time.perf_counter()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
        say(f"vacuum and analyze: {time.perf_counter() - began:.1f}s")
    return LoadSummary(size, seed, counts, time.perf_counter() - started, method, generator.details())
