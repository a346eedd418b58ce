"""Policy administration: validate a draft, reload safely, and measure a change's impact.

A reload builds a new engine from the files, loads it fully, runs the policy's own
decision tables (``policies/tests/*.yaml``), and only then swaps it in; a refused
policy leaves the running one in service. Every reload, accepted or refused, is
audited with the old and new versions and who asked.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

from authz import audit, census, impact, model
from authz.audit import Context
from authz.engine import Engine, LoadedPolicy, PolicyRejected, Problem, policy_version, read_policy
from authz.errors import InvalidInput, NotFound, StoreUnavailable
from authz.impact import Alter, Impact
from authz.impact_jobs import ImpactJob, ImpactJobs
from authz.store import Database
from authz.tables import utcnow

log = logging.getLogger("authz.policy")

MAX_DRAFT_FILES = 64
MAX_DRAFT_BYTES = 512 * 1024


@dataclass(frozen=True)
class ReloadOutcome:
    accepted: bool
    old_version: str
    new_version: str | None
    problems: tuple[Problem, ...] = ()


def check_draft(sources: dict[str, str]) -> list[Problem]:
    """Compile a draft without applying it; return its problems (none: it is valid)."""
    _check_draft_shape(sources)
    try:
        Engine(sources)
    except PolicyRejected as exc:
        return list(exc.problems)
    return []


def _check_draft_shape(sources: dict[str, str]) -> None:
    if not sources:
        raise InvalidInput("give at least one policy file", {"files": ["empty"]})
    if len(sources) > MAX_DRAFT_FILES:
        raise InvalidInput(f"at most {MAX_DRAFT_FILES} files", {"files": ["too many files"]})
    bad = [name for name in sources if not (name == "policies.polar" or _is_policy_file(name))]
    if bad:
        raise InvalidInput(
            "policy files are policies.polar and policies/<name>.polar",
            {"files": [f"not a policy file name: {name}" for name in bad]},
        )
    if sum(len(text.encode()) for text in sources.values()) > MAX_DRAFT_BYTES:
        raise InvalidInput("the draft is too large", {"files": [f"at most {MAX_DRAFT_BYTES} bytes in all"]})


def _is_policy_file(name: str) -> bool:
    folder, _, base = name.partition("/")
    return folder == "policies" and "/" not in base and base.endswith(".polar") and len(base) > 6


def load_policy(root: Path, db: Database, clock: Callable[[], datetime] = utcnow) -> LoadedPolicy:
    """Load the policy files; if they are refused, serve the last accepted policy instead.

    A worker (re)started while an edit that reloads refused is still on disk would
    otherwise fail to boot, and gunicorn would stop the whole server with it.
    """
    try:
        loaded = LoadedPolicy(root)
    except PolicyRejected as refused:
        try:
            with db.transaction(write=False) as tx:
                sources = tx.latest_policy_snapshot()
        except StoreUnavailable:
            sources = None
        if sources is None:
            raise
        loaded = LoadedPolicy(root, Engine(sources))
        loaded.refused_on_disk = list(refused.problems)
        log.error("the policy files are refused (%s); serving the last accepted policy %s",
                  refused.message, loaded.current.version)
        return loaded
    _remember(db, loaded.current, clock)
    return loaded


def _remember(db: Database, engine: Engine, clock: Callable[[], datetime]) -> None:
    try:
        with db.transaction() as tx:
            tx.save_policy_snapshot(engine.version, engine.sources, clock())
    except StoreUnavailable:
        log.warning("could not keep a copy of policy %s (database unavailable)", engine.version)


class PolicyAdmin:
    """Reloads and impact for the policy in service (``loaded``) and its folder."""

    def __init__(
        self,
        db: Database,
        loaded: LoadedPolicy,
        clock: Callable[[], datetime] = utcnow,
        run_tests: Callable[[Engine, Path], list[Problem]] | None = None,
        workers: int = 1,
        census_folder: Path | Literal["from the environment"] | None = "from the environment",
    ):
        """``workers``: processes an impact report over the whole store may fork (1: none).

        ``census_folder``: where impact reports keep the census of the store's pairs
        between them (``authz.census``; None: no census, every report reads the whole store).
        """
        self.db = db
        self.loaded = loaded
        self.clock = clock
        self.run_tests = run_tests or _shipped_tests
        self.workers = workers
        self.census_folder = census.folder() if census_folder == "from the environment" else census_folder
        self.jobs = ImpactJobs(db, clock, census_folder=self.census_folder)
        self._lock = threading.Lock()
        self._fingerprint = _fingerprint(loaded.root)

    @property
    def root(self) -> Path:
        return self.loaded.root

    def build(self, sources: dict[str, str]) -> Engine:
        """Compile ``sources`` and run the policy tests against it; raise if either fails."""
        fresh = Engine(sources)
        problems = self.run_tests(fresh, self.root / "policies" / "tests")
        if problems:
            raise PolicyRejected(problems)
        return fresh

    def reload(self, ctx: Context, automatic: bool = False) -> ReloadOutcome:
        """Re-read the files; swap only a policy that compiles and passes its tests.

        ``automatic`` marks a file watcher's reload: every worker makes the same one,
        so only the first to record it writes the audit record.
        """
        with self._lock:
            old = self.loaded().version
            self._fingerprint = _fingerprint(self.root)
            sources = None
            try:
                sources = read_policy(self.root)
                fresh = self.build(sources)
            except PolicyRejected as exc:
                new = policy_version(sources) if sources else None
                outcome = ReloadOutcome(False, old, new, tuple(exc.problems))
            else:
                self.loaded.swap(fresh)
                self.loaded.refused_on_disk = []
                _remember(self.db, fresh, self.clock)
                outcome = ReloadOutcome(True, old, fresh.version)
            self._audit(ctx, outcome, self._fingerprint if automatic else None)
            log.info("policy reload %s: %s -> %s", "accepted" if outcome.accepted else "refused",
                     outcome.old_version, outcome.new_version)
            return outcome

    def reload_if_changed(self, ctx: Context) -> ReloadOutcome | None:
        """Reload when the files changed since the last look (the file watcher's step)."""
        if _fingerprint(self.root) == self._fingerprint:
            return None
        return self.reload(ctx, automatic=True)

    def _audit(self, ctx: Context, outcome: ReloadOutcome, seen: tuple | None) -> None:
        if outcome.accepted and outcome.old_version == outcome.new_version:
            return  # nothing changed: not a change to record
        now = self.clock()
        with self.db.transaction() as tx:
            if seen is not None:
                key = hashlib.sha256(repr((outcome, seen)).encode()).hexdigest()
                if not tx.claim_policy_event(key, now):
                    return
            audit.record(
                tx, ctx, now, "policy.reload" if outcome.accepted else "policy.reload_refused",
                target=outcome.new_version, old_version=outcome.old_version,
                new_version=outcome.new_version, errors=[p.__dict__ for p in outcome.problems],
                process=os.getpid(),
            )

    # ---- impact ------------------------------------------------------------------------

    def impact_of_draft(self, sources: dict[str, str]) -> Impact:
        """Who would gain or lose which right on which company under ``sources``."""
        _check_draft_shape(sources)
        draft = Engine(sources)
        return self._compare(self.loaded(), draft)

    def start_impact_of_draft(self, sources: dict[str, str], requested_by: str | None,
                              listed_at_most: int = impact.LISTED_AT_MOST) -> ImpactJob:
        """Check the draft, then compute its impact in the background (``authz.impact_jobs``)."""
        _check_draft_shape(sources)
        return self.jobs.start(self.loaded(), Engine(sources), requested_by, listed_at_most)

    def impact_of_delegation_change(self, delegation_id: str, scope: list[str] | None) -> Impact:
        """What narrowing a delegation to ``scope`` (None: revoking it) would take away."""
        def changed(company: model.Company) -> model.Company:
            if all(delegation.id != delegation_id for delegation in company.delegations):
                return company
            delegations = []
            for delegation in company.delegations:
                if delegation.id == delegation_id:
                    if scope is None:
                        delegation = replace(delegation, status=model.LinkStatus.REVOKED.value)
                    else:
                        delegation = replace(delegation, scope=frozenset(scope))
                delegations.append(delegation)
            return model.Company(company.siret, tuple(delegations), company.grants)

        with self.db.transaction(write=False) as tx:
            row = tx.delegation_row(delegation_id)
        if row is None:
            raise NotFound("no such delegation", code="delegation_not_found")
        engine = self.loaded()
        return self._compare(engine, engine, changed, companies=[row.company_siret])

    def _compare(self, before: Engine, after: Engine, alter: Alter | None = None,
                 companies: list[str] | None = None) -> Impact:
        """Compare over every company of the store, or over ``companies``."""
        found = impact.measure(self.db, before, after, self.clock().timestamp(), alter, companies, self.workers,
                               self.census_folder)
        log.info("impact: %d pairs, %d shapes, %d questions in %.1fs (%s)",
                 found.pairs_checked, found.shapes, found.questions, found.seconds, found.method)
        return found


def _fingerprint(root: Path) -> tuple:
    """Names, sizes and modification times of the policy files and tables: cheap to take."""
    paths = [root / "policies.polar"]
    for folder, pattern in ((root / "policies", "*.polar"), (root / "policies" / "tests", "*.yaml")):
        if folder.is_dir():
            paths.extend(sorted(folder.glob(pattern)))
    found = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def _shipped_tests(engine: Engine, folder: Path) -> list[Problem]:
    """Run the decision tables beside the policy; each failure becomes a problem."""
    from authz.policy_tests import run_policy_tests

    if not folder.is_dir():
        return []
    report = run_policy_tests(engine, folder)
    return [
        Problem(failure.file, None, None, failure.message)
        for failure in report.failures
    ]


class PolicyWatcher(threading.Thread):
    """Poll the policy files every ``interval`` seconds and reload when they change."""

    def __init__(self, admin: PolicyAdmin, interval: float):
        super().__init__(name="authz-policy-watcher", daemon=True)
        self.admin = admin
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        ctx = Context(key="file-watch", request_id=f"file-watch-{os.getpid()}")
        while not self._stop_event.wait(self.interval):
            try:
                self.admin.reload_if_changed(ctx)
            except Exception:
                log.exception("policy watcher: reload attempt failed; the running policy stays")

    def stop(self) -> None:
        self._stop_event.set()
