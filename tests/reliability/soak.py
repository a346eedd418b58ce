"""A bounded soak of `authz serve`: mixed reads and writes for a set time, then every
decision checked against the independent reference.

    .venv/bin/python -m tests.reliability.soak --minutes 10 --db postgres
    .venv/bin/python -m tests.reliability.soak --minutes 10 --db sqlite

What it does, in order:

1. a fresh database: a SQLite file in a temporary folder, or a uniquely named database
   created on the PostgreSQL server named by ``--postgres-url`` (default
   ``AUTHZ_TEST_POSTGRES_URL``, else the local server) and dropped at the end; the
   server itself is never reconfigured;
2. ``authz db upgrade`` and keys made with the console script, then ``authz serve
   --workers N`` (default settings otherwise);
3. the starting scenario loaded through the HTTP API only, as portals would
   (``soak_traffic.Lane.set_up``);
4. one client thread per lane for the duration (``soak_traffic``): every call's status
   is recorded, every write's outcome and every read's answer is compared with the
   reference as it goes; the resident memory (VmRSS) and open files of the gunicorn
   master and each worker, and on PostgreSQL the database's connections, are sampled
   every ``--sample-seconds``;
5. the final check (``soak_check``): the store read back and compared with what the
   acknowledged writes made, then every (user, right, company), and the searches, asked
   once more and compared with the reference built from the store;
6. the server's own figures (``/metrics``: requests by status) and its log (no ERROR,
   CRITICAL or traceback line), then a summary; the exit status is 1 if any criterion
   failed (``Report.failures``).

Memory is "flat" when no process grew by more than ``--growth-bound`` (default 10 %)
over the second half of the load: the largest sample of the second half against the
sample taken at half time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.e2e.harness import Api, Cli, Server, environment
from tests.reliability.soak_check import Sweep, merged, read_store, state_differences, sweep
from tests.reliability.soak_traffic import READS, WRITES, Lane, Tally, now
from tests.support import throwaway_postgres

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOG_PROBLEMS = re.compile(r'"level": ?"(ERROR|CRITICAL)"|\[(ERROR|CRITICAL)\]|Traceback|WORKER TIMEOUT')


@dataclass
class Settings:
    seconds: float
    db: str = "sqlite"  # or "postgres"
    postgres_url: str = DEFAULT_POSTGRES_URL
    workers: int = 2
    lanes: int = 4
    write_share: float = 0.15
    sample_seconds: float = 10.0
    growth_bound: float = 0.10
    seed: int = 20260302
    keep: bool = False  # keep the work folder (server log, SQLite file)

    @property
    def short_end(self) -> timedelta:
        """How long a "short" end date lasts: links lapse by themselves during the soak."""
        return timedelta(seconds=max(5.0, min(90.0, self.seconds / 5)))


# ---- the database -------------------------------------------------------------------------


@contextmanager
def fresh_database(settings: Settings, workdir: Path) -> Iterator[str]:
    """The URL of an empty database for this soak; a PostgreSQL one is dropped afterwards."""
    if settings.db == "sqlite":
        yield f"sqlite:///{workdir / 'soak.sqlite3'}"
        return
    with throwaway_postgres(settings.postgres_url, "authz_soak") as url:
        yield url


def connection_counter(settings: Settings, url: str) -> Callable[[], int] | None:
    """On PostgreSQL, a function counting the connections open on the soak's database."""
    if settings.db != "postgres":
        return None
    database = make_url(url).database
    engine = create_engine(settings.postgres_url, poolclass=NullPool)  # no connection kept between samples

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                                    {"name": database}).scalar_one())

    return count


# ---- memory ---------------------------------------------------------------------------------


def _status_kb(pid: int, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Process:
    pid: int
    role: str  # "master" or "worker N"
    samples: list[tuple[float, int, int | None]] = field(default_factory=list)  # (seconds, RSS KiB, open files)


class Sampler:
    """VmRSS and open files of the master and each worker every ``interval`` seconds."""

    def __init__(self, server: Server, interval: float, connections: Callable[[], int] | None):
        self.server = server
        self.interval = interval
        self.connections = connections
        self.processes: dict[int, Process] = {}
        self.connection_samples: list[int] = []
        self.replaced: list[str] = []  # workers that disappeared or appeared during the load
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        assert self.server.process is not None
        elapsed = time.monotonic() - self.started
        pids = [self.server.process.pid, *sorted(self.server.worker_pids() or [])]
        workers = [p for p in self.processes.values() if p.role != "master"]
        if self.processes:
            gone = {p.pid for p in workers} - set(pids)
            new = set(pids[1:]) - {p.pid for p in workers}
            if gone or new:
                self.replaced.append(f"at {elapsed:.0f} s: workers gone {sorted(gone)}, new {sorted(new)}")
        for pid in pids:
            rss = _status_kb(pid, "VmRSS")
            if rss is None:
                continue
            if pid not in self.processes:
                role = "master" if pid == self.server.process.pid else f"worker {len(self.processes)}"
                self.processes[pid] = Process(pid, role)
            self.processes[pid].samples.append((elapsed, rss, _open_files(pid)))
        if self.connections is not None:
            with contextlib.suppress(Exception):  # a figure, not a criterion
                self.connection_samples.append(self.connections())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> Sampler:
        self.started = time.monotonic()
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        self.sample()


@dataclass
class Memory:
    role: str
    pid: int
    first: int  # KiB
    middle: int  # the first sample at or after half time
    last: int
    peak: int
    peak_second_half: int
    samples: int
    files_first: int | None
    files_last: int | None
    trajectory: tuple[int, ...] = ()  # KiB at each tenth of the load


    @property
    def growth(self) -> float:
        """Growth over the second half: its largest sample against the sample at half time."""
        return (self.peak_second_half - self.middle) / self.middle

    def line(self) -> str:
        mib = 1024
        return (f"{self.role} (pid {self.pid}): first {self.first / mib:.1f} MiB, at half time "
                f"{self.middle / mib:.1f}, last {self.last / mib:.1f}, max {self.peak / mib:.1f}; second half "
                f"{self.growth:+.1%} ({self.samples} samples); open files {self.files_first} -> {self.files_last}; "
                f"MiB at each tenth of the load: {[round(kib / mib) for kib in self.trajectory]}")


def memory_figures(processes: dict[int, Process], duration: float) -> list[Memory]:
    figures = []
    for process in processes.values():
        samples = [s for s in process.samples if s[0] <= duration + 1e-6] or process.samples
        half = [s for s in samples if s[0] >= duration / 2] or samples[-1:]
        tenths = tuple(next((s[1] for s in samples if s[0] >= duration * k / 10), samples[-1][1]) for k in range(11))
        figures.append(Memory(process.role, process.pid, samples[0][1], half[0][1], samples[-1][1],
                              max(s[1] for s in samples), max(s[1] for s in half), len(samples),
                              samples[0][2], samples[-1][2], tenths))
    return sorted(figures, key=lambda m: (m.role != "master", m.role))


# ---- the server's own view ------------------------------------------------------------------


def server_statuses(api: Api) -> Counter[str] | None:
    """Requests the server counted, by status (``/metrics``, every worker added up); None if unreadable."""
    request = urllib.request.Request(api.base_url + "/metrics", headers={"Authorization": f"Bearer {api.key}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            raw = response.read().decode()
    except OSError:
        return None
    found: Counter[str] = Counter()
    for match in re.finditer(r"^authz_request_duration_seconds_count\{([^}]*)\} (\S+)$", raw, re.M):
        status = re.search(r'status="(\d+)"', match.group(1))
        if status:
            found[status.group(1)] += int(float(match.group(2)))
    return found


def log_problems(path: Path) -> tuple[int, int, list[str]]:
    """Lines of the server log, and those at ERROR or CRITICAL level or with a traceback."""
    lines = problems = 0
    kept: list[str] = []
    with path.open(errors="replace") as log:
        for line in log:
            lines += 1
            if LOG_PROBLEMS.search(line):
                problems += 1
                if len(kept) < 10:
                    kept.append(line.strip()[:500])
    return lines, problems, kept


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Report:
    settings: Settings
    began: datetime
    code: str
    setup: Tally
    tally: Tally
    setup_seconds: float = 0.0  # database, keys, server start, scenario
    load_seconds: float = 0.0
    check_seconds: float = 0.0
    memory: list[Memory] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    lanes_stopped: list[str] = field(default_factory=list)
    lane_steps: list[int] = field(default_factory=list)
    store_differences: list[str] = field(default_factory=list)
    store_rows: dict[str, int] = field(default_factory=dict)
    final: Sweep = field(default_factory=Sweep)
    server_statuses: Counter[str] | None = None
    log_lines: int = 0
    log_problems: int = 0
    log_texts: list[str] = field(default_factory=list)
    ended: datetime | None = None

    @property
    def failures(self) -> list[str]:
        s, t = self.settings, self.tally
        found = []
        if self.setup.total_errors:
            found.append(f"{self.setup.total_errors} errors while loading the scenario")
        if t.total_errors:
            found.append(f"{t.total_errors} errors during the load")
        if t.total_wrong:
            found.append(f"{t.total_wrong} answers differed from the reference during the load")
        if not (sum(t.calls[k] for k in READS) and sum(t.calls[k] for k in t.calls if k not in READS)):
            found.append("the load made no reads or no writes")
        if self.lanes_stopped:
            found.append(f"{len(self.lanes_stopped)} lanes stopped early")
        if self.store_differences:
            found.append(f"{len(self.store_differences)} differences between the store and the acknowledged writes")
        f = self.final
        if f.disagreements or f.errors or f.ambiguous or not f.decisions:
            found.append(f"final check: {f.disagreements} disagreements, {f.errors} errors, {f.ambiguous} ambiguous, "
                         f"{f.decisions} decisions checked")
        if self.replaced:
            found.append(f"gunicorn workers replaced: {self.replaced}")
        grown = [m for m in self.memory if m.growth >= s.growth_bound]
        if grown:
            found.append("memory grew over the second half: " + "; ".join(
                f"{m.role} {m.growth:+.1%}" for m in grown) + f" (bound {s.growth_bound:.0%})")
        if not self.memory:
            found.append("no memory sample")
        server_5xx = sum(n for status, n in (self.server_statuses or {}).items() if status.startswith("5"))
        if self.server_statuses is None or server_5xx:
            found.append(f"server-side 5xx: {server_5xx if self.server_statuses is not None else 'unknown'}")
        if self.log_problems:
            found.append(f"{self.log_problems} ERROR/CRITICAL/traceback lines in the server log")
        return found

    def text(self) -> str:
        s, t, f = self.settings, self.tally, self.final
        out = [
            f"[soak] {s.db}, `authz serve --workers {s.workers}`, {s.lanes} client threads (lanes), "
            f"write share {s.write_share:.0%}, seed {s.seed}",
            f"  began {self.began:%Y-%m-%d %H:%M:%S} UTC, ended {self.ended:%H:%M:%S} UTC; code {self.code}; "
            f"{platform.node()} ({os.cpu_count()} CPUs), Python {platform.python_version()}",
            f"  set-up (database, keys, server, scenario through the API) {self.setup_seconds:.0f} s: "
            f"{sum(self.setup.calls.values())} calls, {self.setup.total_errors} errors",
            f"  load: {self.load_seconds:.0f} s, {sum(t.calls.values())} requests "
            f"({sum(t.calls.values()) / max(self.load_seconds, 1):.1f}/s), "
            f"per minute: {[t.per_minute[m] for m in sorted(t.per_minute)]}; steps per lane: {self.lane_steps}",
        ]
        for group, kinds in (("reads", READS), ("writes", WRITES)):
            rows = sorted(k for k in t.calls if (k in READS) == (kinds is READS))
            total = sum(t.calls[k] for k in rows)
            out.append(f"  {group}: {total}")
            for kind in rows:
                lat = sorted(t.latencies[kind]) or [0.0]
                statuses = ", ".join(f"{st}: {n}" for (k, st), n in sorted(t.statuses.items()) if k == kind)
                out.append(f"    {kind:<20} {t.calls[kind]:>7}  [{statuses}]  median {statistics.median(lat) * 1000:.0f} ms, "
                           f"p99 {lat[int(0.99 * (len(lat) - 1))] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")
        refusals = ", ".join(f"{kind} {status} {code}: {n}" for (kind, status, code), n in sorted(t.refusals.items()))
        out.append(f"  expected refusals (4xx the reference names): {sum(t.refusals.values())} [{refusals}]")
        out.append(f"  errors (5xx, no answer, unexpected status or record): {t.total_errors} {dict(t.errors)}")
        out += [f"    {line}" for line in t.error_texts[:10]]
        out.append(f"  answers compared with the reference during the load: {sum(t.answers.values())} "
                   f"{dict(sorted(t.answers.items()))}; wrong: {t.total_wrong}; not compared (end date within 1 s): "
                   f"{t.ambiguous}; writes not sent (same reason): {t.skipped_writes}")
        out += [f"    {line}" for line in t.wrong_texts[:10]]
        if self.lanes_stopped:
            out.append(f"  lanes stopped early: {self.lanes_stopped}")
        out.append(f"  store after the load: {self.store_rows}; differences with the acknowledged writes: "
                   f"{len(self.store_differences)}")
        out += [f"    {line}" for line in self.store_differences[:10]]
        out.append(f"  final check ({self.check_seconds:.0f} s): {f.decisions} decisions ({f.allowed} allowed) and {f.searches} searches compared "
                   f"with the reference built from the store; disagreements: {f.disagreements}, errors: {f.errors}, "
                   f"ambiguous: {f.ambiguous}; statuses {dict(f.statuses)}")
        out += [f"    {line}" for line in f.texts[:10]]
        out.append(f"  memory (VmRSS, sampled every {s.sample_seconds:g} s during the load; bound on second-half "
                   f"growth {s.growth_bound:.0%}):")
        out += [f"    {m.line()}" for m in self.memory]
        if self.connections:
            out.append(f"  PostgreSQL connections to the soak database: first {self.connections[0]}, "
                       f"last {self.connections[-1]}, max {max(self.connections)}")
        out.append(f"  workers replaced: {self.replaced or 'none'}")
        out.append(f"  server /metrics, requests by status: {dict(sorted((self.server_statuses or {}).items()))}")
        out.append(f"  server log: {self.log_lines} lines, {self.log_problems} ERROR/CRITICAL/traceback")
        out += [f"    {line}" for line in self.log_texts]
        failures = self.failures
        out.append("  RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
        return "\n".join(out)


def code_version() -> str:
    """Where the service's code comes from (the server inherits this interpreter's path), and its commit."""
    spec = importlib.util.find_spec("service")
    root = Path(spec.origin).resolve().parents[1] if spec and spec.origin else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "authz", "service", "policies", "policies.polar"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"{root} (git unavailable)"
    if head.returncode != 0:
        return f"{root} (not a git checkout)"
    return f"{root} at {head.stdout.strip()}{' + uncommitted changes in authz/service/policies' if dirty else ''}"


def run(settings: Settings, workdir: Path | None = None) -> Report:
    """Run the whole soak once and return its report (print ``report.text()``)."""
    own = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="authz-soak-"))
    report = Report(settings, now(), code_version(), Tally(), Tally())
    try:
        with fresh_database(settings, workdir) as url:
            _run(settings, workdir, url, report)
    finally:
        report.ended = now()
        if own and not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def _run(settings: Settings, workdir: Path, url: str, report: Report) -> None:
    began = time.monotonic()
    cli = Cli(environment(url), workdir)
    cli.ok("db", "upgrade")
    keys = {role: cli.create_key(role, f"soak-{role}") for role in ("pep", "portal", "admin")}
    server = Server(cli.env, workdir, workdir / "server.log", workers=settings.workers)
    try:
        server.start()
        pep, portal = Api(server.base_url, keys["pep"]), Api(server.base_url, keys["portal"])
        lanes = [Lane(n, pep, portal, report.setup, random.Random(settings.seed + n), settings.short_end,
                      settings.write_share) for n in range(settings.lanes)]
        for lane in lanes:
            lane.set_up()
            lane.prune()
            lane.tally = report.tally
        report.setup_seconds = time.monotonic() - began
        sampler = Sampler(server, settings.sample_seconds, connection_counter(settings, url)).start()
        began = report.tally.started = time.monotonic()
        deadline = began + settings.seconds
        for lane in lanes:
            # No short end date in the last stretch: every one has lapsed before the final check.
            lane.short_ends_until = deadline - settings.short_end.total_seconds() - 5
        threads = [threading.Thread(target=lane.run, args=(deadline,), daemon=True) for lane in lanes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report.load_seconds = time.monotonic() - began
        sampler.stop()
        report.memory = memory_figures(sampler.processes, report.load_seconds)
        report.replaced = sampler.replaced
        report.connections = sampler.connection_samples
        report.lanes_stopped = [f"lane {lane.index}: {lane.stopped}" for lane in lanes if lane.stopped]
        report.lane_steps = [lane.steps for lane in lanes]
        for lane in lanes:
            lane.prune()

        began = time.monotonic()
        stored, companies, users = read_store(url)
        report.store_rows = {"companies": len(companies), "users": len(users),
                             "delegations": len(stored.delegations), "grants": len(stored.grants)}
        at = now()
        report.store_differences = state_differences(merged([lane.whole() for lane in lanes]), stored, at)
        everyone = sorted({*users, *(u for lane in lanes for u in lane.users)})
        report.final = sweep(pep, stored, companies, everyone)
        report.check_seconds = time.monotonic() - began
        report.server_statuses = server_statuses(Api(server.base_url, keys["admin"]))
    finally:
        server.stop()
    report.log_lines, report.log_problems, report.log_texts = log_problems(server.log_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres-url", default=os.environ.get("AUTHZ_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL,
                        help="the server the soak's own database is created on (default: AUTHZ_TEST_POSTGRES_URL, "
                             f"else {DEFAULT_POSTGRES_URL})")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lanes", type=int, default=4, help="client threads, each driving its own part of the scenario")
    parser.add_argument("--write-share", type=float, default=0.15)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--growth-bound", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server log, SQLite file)")
    args = parser.parse_args(argv)
    settings = Settings(seconds=args.minutes * 60, db=args.db, postgres_url=args.postgres_url, workers=args.workers,
                        lanes=args.lanes, write_share=args.write_share, sample_seconds=args.sample_seconds,
                        growth_bound=args.growth_bound, seed=args.seed, keep=args.keep)
    workdir = Path(tempfile.mkdtemp(prefix="authz-soak-"))
    print(f"[soak] {settings.seconds:.0f} s on {settings.db}; work folder {workdir}", flush=True)
    try:
        report = run(settings, workdir)
    finally:
        if not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report.text(), flush=True)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
