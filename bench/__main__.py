"""``python -m bench``: the decision service at regional/national scale, each figure beside its baseline.

    python -m bench [--size national] [--db sqlite|postgres|both] [--quick]

Datasets are generated once and cached (``var/bench/``: SQLite files; PostgreSQL
databases ``authz_bench_<size>``). Every measurement runs beside its baseline in the
same run, interleaved where it can be, because this machine is shared and noisy:

1. POST /access/v1/evaluation under ``authz serve --workers N``, against the floor
   (``bench/floor_app.py``: a constant answer under the same gunicorn settings); then
   again on the stream's first 200 distinct questions, which every worker has answered
   before (what a request costs with no cache miss);
2. /access/v1/evaluations, 100 items per call, against the floor;
3. resource search: the largest firm's full client list and its first 100-item page,
   against the floor shipping as many results, and in process against plain Python;
4. one decision in process, cold (fresh ``Decisions``, pairs never asked) and warm
   (the same pair again), against a plain-Python lookup over preloaded dicts;
5. growth: decision latency at 10k, 100k and 1M grants; RSS per gunicorn worker;

and, with valgrind, the instructions a cached decision takes in process, service against
floor, and a decision on a pair never met (``bench/instructions.py``): figures the machine's
noise does not move.

Before sections 4 and 5, and again before the HTTP sections, each backend's datasets are
read whole into the operating system's file cache (``datasets.prime``): these machines
hand idle file cache back to their host, and a cold decision would otherwise measure the
disk, by how long the dataset sat unread.

Results go to BENCHMARKS.md (and the raw figures to var/bench/results-*.json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from authz import tokens
from authz.audit import Context
from authz.dataset import DEFAULT_SEED, SIZES
from authz.decisions import Decisions
from authz.engine import LoadedPolicy
from authz.policy import load_policy
from authz.store import Database
from authz.tables import api_keys, company_admins, utcnow
from authz.usecases import Management
from bench import datasets, http, instructions
from bench.reference import Preloaded
from bench.stream import Question, build_stream, distinct_questions, load_pools, write_batches, write_bodies

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
GROWTH = ("medium", "large", "national")  # ~10k, ~100k, ~1M grants
BENCH_KEY = "bench-pep"
BENCH_ADMIN_KEY = "bench-admin"  # reads /metrics
SEARCH_RIGHT = "compte"


@dataclass(frozen=True)
class Plan:
    quick: bool
    http_seconds: float
    rounds: int
    warmup_seconds: float
    connections: int
    stream: int
    cold: int
    growth_cold: int
    search_full: int
    search_page: int
    search_budget: float  # seconds of sampling per search figure, at most
    search_cap: float  # the in-process search child is stopped after this
    cached_seconds: float  # each round on questions every worker has answered

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, 5, 1, 2, 4, 20_000, 300, 200, 3, 15, 30, 60, 3)
        return cls(False, 12, 3, 3, 4, 50_000, 2_000, 800, 7, 40, 90, 180, 8)


def ms(values: list[float]) -> dict:
    """p50/p99/mean in milliseconds of durations in seconds."""
    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "mean": float("nan")}
    return {
        "n": len(values),
        "p50": http.percentile(values, 50) * 1000,
        "p99": http.percentile(values, 99) * 1000,
        "mean": statistics.fmean(values) * 1000,
    }


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# ---- the machine ------------------------------------------------------------------------------


def machine() -> dict:
    def first(path: str, prefix: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        except OSError:
            return "?"

    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "nproc": run("nproc") or str(os.cpu_count()),
        "memory": f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else "?",
        "cpu": first("/proc/cpuinfo", "model name"),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
        "dirty": bool(run("git", "-C", str(ROOT), "status", "--porcelain")),
        "wrk": run("wrk", "--version").splitlines()[0] if http.have_wrk() else "absent (Python generator)",
    }


# ---- in process -------------------------------------------------------------------------------


def inprocess(url: str, questions: list[Question], reference: Preloaded | None) -> dict:
    """Cold, warm and (with a reference) the limit, question by question, interleaved."""
    db = Database(url)
    try:
        db.ping()
        began = time.perf_counter()
        decisions = Decisions(db, LoadedPolicy(ROOT))
        construct = time.perf_counter() - began
        cold, warm, limit = [], [], []
        mismatches, allowed = [], 0
        for q in questions:
            db.forget_data_version()  # cold: the data version is read too, as by a worker idle for a while
            t0 = time.perf_counter()
            first = decisions.decide(q.user, q.right, q.siret)
            t1 = time.perf_counter()
            again = decisions.decide(q.user, q.right, q.siret)
            t2 = time.perf_counter()
            cold.append(t1 - t0)
            warm.append(t2 - t1)
            allowed += first.allowed
            if again.allowed != first.allowed:
                mismatches.append(f"warm != cold: {q}")
            if reference is not None:
                now = time.time()
                t3 = time.perf_counter()
                expected = reference.decide(q.user, q.right, q.siret, now)
                limit.append(time.perf_counter() - t3)
                if expected != first.allowed:
                    mismatches.append(f"service {first.allowed} ({first.reason}), reference {expected}: {q}")
        return {"construct_ms": construct * 1000, "cold": ms(cold), "warm": ms(warm), "limit": ms(limit),
                "questions": len(questions), "allowed": allowed, "mismatches": mismatches[:20],
                "mismatch_count": len(mismatches)}
    finally:
        db.dispose()


def growth_interleaved(urls: dict[str, str], questions: dict[str, list[Question]]) -> dict:
    """Cold and warm decisions on each dataset size, one question per size in turn (noise hits all alike)."""
    dbs = {size: Database(url) for size, url in urls.items()}
    try:
        decisions = {}
        for size, db in dbs.items():
            db.ping()
            decisions[size] = Decisions(db, LoadedPolicy(ROOT))
        cold: dict[str, list[float]] = {size: [] for size in urls}
        warm: dict[str, list[float]] = {size: [] for size in urls}
        sizes = list(urls)
        rounds = min(len(found) for found in questions.values())
        for index in range(rounds):
            turn = sizes[index % len(sizes):] + sizes[: index % len(sizes)]
            for size in turn:
                q = questions[size][index]
                dbs[size].forget_data_version()
                t0 = time.perf_counter()
                decisions[size].decide(q.user, q.right, q.siret)
                t1 = time.perf_counter()
                decisions[size].decide(q.user, q.right, q.siret)
                t2 = time.perf_counter()
                cold[size].append(t1 - t0)
                warm[size].append(t2 - t1)
        return {size: {"cold": ms(cold[size]), "warm": ms(warm[size])} for size in sizes}
    finally:
        for db in dbs.values():
            db.dispose()


def _search_child(url: str, manager: str, samples: int, budget: float, queue) -> None:
    db = Database(url)
    try:
        db.ping()
        decisions = Decisions(db, LoadedPolicy(ROOT))
        deadline = time.monotonic() + budget
        for _ in range(samples):
            began = time.perf_counter()
            found = decisions.resources(manager, SEARCH_RIGHT)
            queue.put((time.perf_counter() - began, found))
            if time.monotonic() > deadline:
                break
    finally:
        db.dispose()
        queue.put(None)


def inprocess_search(url: str, manager: str, reference: Preloaded, samples: int, budget: float,
                     cap: float) -> dict:
    """``Decisions.resources`` for the largest firm's manager, in a child process stopped after ``cap`` s."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_search_child, args=(url, manager, samples, budget, queue), daemon=True)
    service: list[float] = []
    size, error = 0, None
    child.start()
    deadline = time.monotonic() + cap
    try:
        while True:
            try:
                item = queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - queue.Empty: the cap is reached
                error = f"stopped after {cap:.0f} s with {len(service)} call(s) done"
                break
            if item is None:
                break
            seconds, found = item
            service.append(seconds)
            size = len(found)
            expected = reference.resources(manager, SEARCH_RIGHT, time.time())
            if found != expected:
                error = f"resources differ: service {len(found)}, reference {len(expected)}"
    finally:
        if child.is_alive():
            child.kill()
        child.join(timeout=10)
    limit = []
    for _ in range(max(3, len(service))):
        began = time.perf_counter()
        reference.resources(manager, SEARCH_RIGHT, time.time())
        limit.append(time.perf_counter() - began)
    return {"service": ms(service), "limit": ms(limit), "size": size, "error": error,
            "lower_bound_ms": None if service else cap * 1000}


# ---- HTTP --------------------------------------------------------------------------------------


def install_key(url: str, name: str = BENCH_KEY, role: str = "pep") -> str:
    """A fresh key of ``role`` named ``name`` (replacing the previous run's); returns the secret."""
    secret = tokens.new_secret("authz_")
    db = Database(url)
    try:
        with db.transaction() as tx:
            tx.conn.execute(delete(api_keys).where(api_keys.c.name == name))
            tx.insert_api_key(name, role, tokens.digest(secret), utcnow())
    finally:
        db.dispose()
    return secret


def answer_lookups(port: int, admin_key: str) -> dict[str, float]:
    """The service's answer cache lookups so far by result (hit, shared, miss), summed over
    its workers (/metrics)."""
    status, raw = http.request(port, "GET", "/metrics", token=admin_key)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    found = {"hit": 0.0, "shared": 0.0, "miss": 0.0}
    for family in text_string_to_metric_families(raw.decode()):
        for sample in family.samples:
            if sample.name == "authz_answer_cache_lookups_total":
                found[sample.labels["result"]] += sample.value
    return found


def verify_http(server: http.Server, token: str, questions: list[Question], reference: Preloaded) -> dict:
    """The service answers like the reference (and 200) on a sample of the stream."""
    statuses, mismatches = {}, []
    for q in questions:
        status, raw = http.request(server.port, "POST", "/access/v1/evaluation", q.as_evaluation(), token)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            answer = json.loads(raw)
            expected = reference.decide(q.user, q.right, q.siret, time.time())
            if answer["decision"] != expected:
                mismatches.append(f"http {answer} reference {expected}: {q}")
    return {"checked": len(questions), "statuses": statuses, "mismatches": mismatches[:10],
            "mismatch_count": len(mismatches)}


def _search_body(manager: str, limit: int, token: str | None = None) -> dict:
    page = {"limit": limit}
    if token:
        page["token"] = token
    return {"subject": {"type": "user", "id": manager}, "action": {"name": SEARCH_RIGHT},
            "resource": {"type": "company"}, "page": page}


class SearchFailed(RuntimeError):
    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


def _search_call(port: int, key: str, body: dict) -> tuple[int, bytes, float]:
    began = time.perf_counter()
    try:
        status, raw = http.request(port, "POST", "/access/v1/search/resource", body, key, timeout=120)
    except (OSError, ConnectionError) as exc:  # gunicorn kills a worker past its 30 s timeout
        raise SearchFailed(f"{type(exc).__name__}: {exc}", time.perf_counter() - began) from exc
    seconds = time.perf_counter() - began
    if status != 200:
        raise SearchFailed(f"HTTP {status}: {raw[:200]!r}", seconds)
    return status, raw, seconds


def search_full(port: int, key: str, manager: str) -> tuple[float, int, list[int]]:
    """Fetch every page at the largest page size; (seconds, results, page sizes)."""
    began = time.perf_counter()
    token, total, pages = None, 0, []
    while True:
        try:
            _status, raw, _ = _search_call(port, key, _search_body(manager, 10_000, token))
        except SearchFailed as exc:
            raise SearchFailed(str(exc), time.perf_counter() - began) from exc
        found = json.loads(raw)
        pages.append(len(found["results"]))
        total += len(found["results"])
        token = found["page"]["next_token"]
        if not token:
            return time.perf_counter() - began, total, pages


def floor_pages(port: int, pages: list[int]) -> float:
    began = time.perf_counter()
    for size in pages:
        status, _ = http.request(port, "POST", "/access/v1/search/resource", _search_body("x@y.example", size))
        if status != 200:
            raise RuntimeError(f"floor search answered {status}")
    return time.perf_counter() - began


WRITES_PER_SECOND = 5
WRITER = "bench.writer@example.org"


class _Writer(threading.Thread):
    """Changes through the use cases while the service answers: an admin of one company adds a
    second admin, then removes it, ``WRITES_PER_SECOND`` changes a second (each bumps the data
    version and names that company and that person)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.db = Database(url)
        with self.db.engine.connect() as conn:
            self.siret, self.admin = conn.execute(
                select(company_admins.c.company_siret, company_admins.c.user_email)
                .order_by(company_admins.c.company_siret, company_admins.c.user_email).limit(1)).one()
        self.management = Management(self.db, load_policy(ROOT, self.db))
        self.stopping = threading.Event()
        self.writes = 0

    def run(self) -> None:
        ctx = Context(user=self.admin, key="bench-writer")
        while not self.stopping.is_set():  # in pairs: the company ends as it began
            self.management.add_admin(ctx, self.siret, WRITER)
            self.stopping.wait(1 / WRITES_PER_SECOND)
            self.management.remove_admin(ctx, self.siret, WRITER)
            self.writes += 2
            self.stopping.wait(1 / WRITES_PER_SECOND)

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.db.dispose()


def _lookups_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {f"cache_{name}": after[result] - before[result]
            for name, result in (("hits", "hit"), ("shared", "shared"), ("misses", "miss"))}


def evaluation_under_writes(url: str, service: http.Server, key: str, admin_key: str, files: dict,
                            plan: Plan) -> dict:
    """The stream again, without writes then with them: what a steady flow of changes costs
    the service's caches (its baseline is the run just before, on the same warm workers)."""
    runs = {}
    for name in ("without", "with"):
        writer = _Writer(url) if name == "with" else None
        lookups = answer_lookups(service.port, admin_key)
        if writer is not None:
            writer.start()
        try:
            found = http.load(service.port, "/access/v1/evaluation", files["bodies"], key, plan.http_seconds,
                              plan.connections)
        finally:
            if writer is not None:
                writer.stop()
        after = answer_lookups(service.port, admin_key)
        runs[name] = asdict(found) | {"rps": found.rps, **_lookups_between(lookups, after),
                                      "writes": writer.writes if writer is not None else 0}
        say(f"evaluation {name} writes: {found.rps:.0f} req/s p99 {found.p99_ms:.1f} ms, "
            f"{runs[name]['writes']} writes, answer cache misses {runs[name]['cache_misses']:.0f}")
    return runs


def evaluation_rounds(what: str, floor: http.Server, service: http.Server, bodies: Path, key: str, admin_key: str,
                      seconds: float, plan: Plan) -> dict:
    """``plan.rounds`` rounds of ``POST /access/v1/evaluation`` over ``bodies``, floor then
    service, each with what a request cost the workers and, for the service, how often its
    answer came from its cache: what the ratio is made of."""
    runs: dict[str, list] = {"floor": [], "service": []}
    for round_ in range(plan.rounds):
        for name, server in (("floor", floor), ("service", service)):
            lookups = answer_lookups(service.port, admin_key) if server is service else None
            cpu = server.worker_cpu_seconds()
            found = http.load(server.port, "/access/v1/evaluation", bodies, key, seconds, plan.connections)
            extra = {"worker_cpu_us": (server.worker_cpu_seconds() - cpu) * 1e6 / max(found.requests, 1)}
            if lookups is not None:
                after = answer_lookups(service.port, admin_key)
                extra |= _lookups_between(lookups, after)
            runs[name].append(asdict(found) | {"rps": found.rps} | extra)
            say(f"{what} {name} round {round_ + 1}: {found.rps:.0f} req/s "
                f"p50 {found.p50_ms:.1f} ms p99 {found.p99_ms:.1f} ms errors {found.errors}, "
                f"worker CPU {extra['worker_cpu_us']:.0f} us per request"
                + (f", answer cache misses {extra['cache_misses']:.0f}" if lookups is not None else ""))
    return runs


def http_suite(backend: str, url: str, plan: Plan, workers: int, files: dict, manager: str,
               verify: list[Question], reference: Preloaded) -> dict:
    logs = OUT / "logs" / backend
    for old in logs.glob("*.log"):
        old.unlink()
    key = install_key(url)
    admin_key = install_key(url, BENCH_ADMIN_KEY, "admin")
    floor = http.Server.floor(logs, workers)
    service = http.Server.service(url, logs, workers)
    result: dict = {}
    try:
        floor.start()
        service.start()
        say(f"{backend}: servers up (service :{service.port}, floor :{floor.port}); checking answers")
        result["verify"] = verify_http(service, key, verify, reference)
        for server in (floor, service):  # warm both: pools, policy, page cache
            http.load(server.port, "/access/v1/evaluation", files["bodies"], key, plan.warmup_seconds,
                      plan.connections)
        what = f"{backend}: evaluation"
        result["evaluation"] = evaluation_rounds(what, floor, service, files["bodies"], key, admin_key,
                                                 plan.http_seconds, plan)
        # Questions both workers have answered before: what a request costs with no miss, to
        # tell the work every request does from what the stream's misses add.
        for server in (floor, service):
            http.load(server.port, "/access/v1/evaluation", files["cached"], key, plan.warmup_seconds,
                      plan.connections)
        result["evaluation_cached"] = evaluation_rounds(f"{what} all cached", floor, service, files["cached"], key,
                                                        admin_key, plan.cached_seconds, plan)
        result["under_writes"] = evaluation_under_writes(url, service, key, admin_key, files, plan)
        runs = {"floor": [], "service": []}
        for round_ in range(plan.rounds):
            for name, server in (("floor", floor), ("service", service)):
                found = http.load(server.port, "/access/v1/evaluations", files["batches"], key, plan.http_seconds,
                                  plan.connections)
                runs[name].append(asdict(found) | {"rps": found.rps, "decisions_per_s": found.rps * 100})
                say(f"{backend}: evaluations {name} round {round_ + 1}: {found.rps * 100:.0f} decisions/s "
                    f"p50 {found.p50_ms:.1f} ms errors {found.errors}")
        result["evaluations"] = runs
        # Resource search, one client, service and floor alternating.
        full, full_floor, page, page_floor = [], [], [], []
        size, pages, errors = 0, [], []
        # The very first search this server answers: nothing of the firm is warm yet.
        page_first = None
        try:
            page_first = _search_call(service.port, key, _search_body(manager, 100))[2]
        except SearchFailed as exc:
            errors.append(f"first page (first call) failed after {exc.seconds:.1f} s: {exc}")
        deadline = time.monotonic() + plan.search_budget
        for _ in range(plan.search_full):
            try:
                seconds, size, pages = search_full(service.port, key, manager)
            except SearchFailed as exc:
                errors.append(f"full list failed after {exc.seconds:.1f} s: {exc}")
                break
            full.append(seconds)
            full_floor.append(floor_pages(floor.port, pages))
            if time.monotonic() > deadline:
                break
        deadline = time.monotonic() + plan.search_budget
        for _ in range(plan.search_page):
            try:
                _status, raw, seconds = _search_call(service.port, key, _search_body(manager, 100))
            except SearchFailed as exc:
                errors.append(f"first page failed after {exc.seconds:.1f} s: {exc}")
                break
            page.append(seconds)
            got = json.loads(raw)
            size = size or got["page"].get("total", 0)
            page_floor.append(floor_pages(floor.port, [len(got["results"])]))
            if time.monotonic() > deadline:
                break
        result["search"] = {"size": size, "pages": pages, "full": ms(full), "full_floor": ms(full_floor),
                            "page": ms(page), "page_floor": ms(page_floor), "errors": errors,
                            "full_first_ms": full[0] * 1000 if full else None,
                            "page_first_ms": page_first * 1000 if page_first is not None else None}
        say(f"{backend}: search full list ({size}) p50 {ms(full)['p50']:.0f} ms, first page p50 "
            f"{ms(page)['p50']:.1f} ms")
        result["rss_mb"] = {"service": service.worker_rss_mb(), "floor": floor.worker_rss_mb()}
    finally:
        service.stop()
        floor.stop()
    return result


# ---- the run -------------------------------------------------------------------------------------


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def primed(backend: str, size: str, url: str) -> dict:
    """``datasets.prime``, said."""
    found = datasets.prime(url)
    if "skipped" in found:
        say(f"{backend}/{size}: not read into the file cache ({found['skipped']})")
    else:
        say(f"{backend}/{size}: read into the file cache, {found['bytes'] / 2**20:,.0f} MiB in {found['seconds']:.1f}s")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="national")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="shorter runs and fewer samples (about 10 minutes)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    plan = Plan.make(args.quick)
    backends = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    info = machine()
    say(f"machine: {info}")
    OUT.mkdir(parents=True, exist_ok=True)

    growth = [size for size in GROWTH if SIZES[size].grants <= SIZES[args.size].grants]
    if args.size not in growth:
        growth.append(args.size)
    # Two loads at a time (one per core), the largest first: a cold cache costs the longest load or so.
    jobs = sorted(((backend, size) for backend in backends for size in growth), key=lambda j: -SIZES[j[1]].grants)
    with ProcessPoolExecutor(max_workers=min(2, len(jobs)), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {job: pool.submit(datasets.prepare, job[0], job[1], args.seed, say) for job in jobs}
        prepared: dict[tuple[str, str], datasets.Prepared] = {
            (backend, size): futures[(backend, size)].result() for backend in backends for size in growth
        }

    main_url = prepared[(backends[0], args.size)].url
    main_db = Database(main_url)
    try:
        say("building the request stream")
        pools = load_pools(main_db)
        stream = build_stream(main_db, plan.stream, seed=args.seed, pools=pools)
        # Cold questions: drawn from another stream (another seed), no user or company twice.
        fresh = build_stream(main_db, plan.stream, seed=args.seed + 1, pools=load_pools(main_db))
        cold = distinct_questions(fresh, plan.cold, seed=args.seed)
        say("preloading the reference dicts")
        reference = Preloaded.load(main_db)
    finally:
        main_db.dispose()
    files = {"bodies": write_bodies(stream, OUT / f"stream-{args.size}.jsonl"),
             "batches": write_batches(stream, OUT / f"batches-{args.size}.jsonl")}
    cached = instructions.distinct_bodies(files["bodies"])  # the stream's first distinct questions
    files["cached"] = OUT / f"cached-{args.size}.jsonl"
    files["cached"].write_bytes(b"\n".join(cached) + b"\n")
    kinds: dict[str, int] = {}
    for q in stream:
        kinds[q.kind] = kinds.get(q.kind, 0) + 1
    now = time.time()
    stream_allowed = sum(reference.decide(q.user, q.right, q.siret, now) for q in stream)
    say(f"stream: {len(stream)} questions, {stream_allowed / len(stream):.0%} allowed; reference loaded in "
        f"{reference.seconds:.1f}s")

    results: dict = {"machine": info, "command": command, "plan": asdict(plan), "size": args.size,
                     "seed": args.seed, "largest_manager": pools.largest_manager, "largest_firm": pools.largest_firm,
                     "stream": {"questions": len(stream), "kinds": kinds, "allowed": stream_allowed},
                     "cached_questions": len(cached),
                     "datasets": {f"{b}/{s}": asdict(p) for (b, s), p in prepared.items()},
                     "backends": {}}
    if instructions.available():
        say(f"instructions per decision in process, cached and on pairs never met ({backends[0]}, callgrind)")
        results["instructions"] = {"backend": backends[0], "cold_warm": instructions.COLD_WARM,
                                   "per_request": instructions.per_request(main_url, files["bodies"],
                                                                           install_key(main_url))}
    else:
        say("valgrind is not installed: no instruction counts")
    for backend in backends:
        growth_questions = {}
        for size in growth:
            db = Database(prepared[(backend, size)].url)
            try:
                growth_questions[size] = distinct_questions(build_stream(db, plan.stream, seed=args.seed + 2),
                                                            plan.growth_cold, seed=args.seed + 2)
            finally:
                db.dispose()
        found: dict = {"primed": {size: primed(backend, size, prepared[(backend, size)].url) for size in growth}}
        say(f"{backend}: in-process decisions at {args.size}")
        found["inprocess"] = inprocess(prepared[(backend, args.size)].url, cold, reference)
        growth_found = growth_interleaved({size: prepared[(backend, size)].url for size in growth},
                                          growth_questions)
        for size, figures in growth_found.items():
            say(f"{backend}: growth {size}: cold p50 {figures['cold']['p50']:.2f} ms")
        found["growth"] = growth_found
        found["primed_for_http"] = primed(backend, args.size, prepared[(backend, args.size)].url)
        say(f"{backend}: HTTP at {args.size}")
        verify = random.Random(args.seed).sample(stream, min(300, len(stream)))
        found["http"] = http_suite(backend, prepared[(backend, args.size)].url, plan, args.workers, files,
                                   pools.largest_manager, verify, reference)
        say(f"{backend}: resource search in process")
        found["search_inprocess"] = inprocess_search(prepared[(backend, args.size)].url, pools.largest_manager,
                                                     reference, plan.search_full, plan.search_budget,
                                                     plan.search_cap)
        results["backends"][backend] = found

    results["elapsed_s"] = time.perf_counter() - started
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (OUT / f"results-{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    from bench.report import render, with_sections

    args.output.write_text(with_sections(render(results), args.output))
    say(f"wrote {args.output} and var/bench/results-{stamp}.json in {results['elapsed_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
