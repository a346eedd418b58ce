"""Benchmark datasets, generated once and cached between runs.

SQLite: ``var/bench/authz_<size>.sqlite3`` with a marker file beside it;
PostgreSQL: database ``authz_bench_<size>`` whose COMMENT is the marker. A cache is
reused only if its marker names the same size, seed and dataset version (otherwise it is
dropped and loaded again); a reused one is first brought to the newest schema revision,
as a deployment would be.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from authz import dataset, migrate
from authz.store import Database

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "bench"
POSTGRES_SERVER = os.environ.get("AUTHZ_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@dataclass
class Prepared:
    backend: str
    size: str
    url: str
    reused: bool
    load_seconds: float  # of this run's load, or of the load that made the cache
    counts: dict
    details: dict


def marker(size: str, seed: int) -> dict:
    return {"size": size, "seed": seed, "version": dataset.DATASET_VERSION}


def _same(found: dict | None, wanted: dict) -> bool:
    return bool(found) and all(found.get(key) == value for key, value in wanted.items())


def sqlite_url(size: str) -> str:
    return f"sqlite:///{CACHE / f'authz_{size}.sqlite3'}"


def prepare_sqlite(size: str, seed: int, say=print) -> Prepared:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"authz_{size}.sqlite3"
    mark = CACHE / f"authz_{size}.json"
    wanted = marker(size, seed)
    found = json.loads(mark.read_text()) if mark.is_file() else None
    url = sqlite_url(size)
    if path.is_file() and _same(found, wanted):
        say(f"sqlite/{size}: reusing {path.relative_to(ROOT)} (loaded in {found['load_seconds']:.1f}s)")
        migrate.upgrade(url)
        return Prepared("sqlite", size, url, True, found["load_seconds"], found["counts"], found["details"])
    for stale in (path, mark, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    say(f"sqlite/{size}: generating (seed {seed})")
    migrate.upgrade(url)
    db = Database(url)
    try:
        summary = dataset.load_dataset(db, size, seed=seed, progress=lambda m: say(f"  {m}"))
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.dispose()
    record = {**wanted, "load_seconds": summary.elapsed, "counts": summary.counts, "details": summary.details,
              "method": summary.method}
    mark.write_text(json.dumps(record, indent=1))
    say(f"sqlite/{size}: loaded in {summary.elapsed:.1f}s")
    return Prepared("sqlite", size, url, False, summary.elapsed, summary.counts, summary.details)


def postgres_url(size: str) -> str:
    return make_url(POSTGRES_SERVER).set(database=f"authz_bench_{size}").render_as_string(hide_password=False)


def prepare_postgres(size: str, seed: int, say=print) -> Prepared:
    name = f"authz_bench_{size}"
    wanted = marker(size, seed)
    admin = create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            row = conn.execute(
                text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            found = None
            if row is not None and row[0]:
                try:
                    found = json.loads(row[0])
                except ValueError:
                    found = None
            if row is not None and _same(found, wanted):
                say(f"postgres/{size}: reusing database {name} (loaded in {found['load_seconds']:.1f}s)")
                migrate.upgrade(postgres_url(size))
                return Prepared("postgres", size, postgres_url(size), True, found["load_seconds"],
                                found["counts"], found["details"])
            if row is not None:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        say(f"postgres/{size}: generating (seed {seed})")
        url = postgres_url(size)
        migrate.upgrade(url)
        db = Database(url)
        try:
            summary = dataset.load_dataset(db, size, seed=seed, progress=lambda m: say(f"  {m}"))
        finally:
            db.dispose()
        record = {**wanted, "load_seconds": summary.elapsed, "counts": summary.counts,
                  "details": summary.details, "method": summary.method}
        with admin.connect() as conn:
            literal = json.dumps(record).replace("'", "''")
            conn.execute(text(f"COMMENT ON DATABASE \"{name}\" IS '{literal}'"))
        say(f"postgres/{size}: loaded in {summary.elapsed:.1f}s")
        return Prepared("postgres", size, url, False, summary.elapsed, summary.counts, summary.details)
    finally:
        admin.dispose()


def prepare(backend: str, size: str, seed: int, say=print) -> Prepared:
    return prepare_sqlite(size, seed, say) if backend == "sqlite" else prepare_postgres(size, seed, say)


def prime(url: str) -> dict:
    """Read a dataset whole into the operating system's file cache: its file (SQLite), or
    its tables and indexes (PostgreSQL, ``pg_prewarm`` in its 'read' mode).

    The machines these benchmarks run on hand idle file cache back to their host, about
    2 MB/s (``fincore`` on the national SQLite file, 2026-11-29: 991, 978, 935, 901 then
    864 MB resident, 15 s apart, the machine idle). A dataset left alone for the minutes
    of the other backend's sections is then read from disk again, and decisions that miss
    the cache measure the disk: PostgreSQL's cold p50 was 1.42 ms and its growth ratio
    1.48x in a full run, 0.90 ms and 1.05x in a run of PostgreSQL alone, with the same
    code. Sections 1 to 5 measure the service against a database whose data is in memory,
    as on a server sized for it; this puts it there before each of them.

    Returns what was read: {"bytes": ..., "seconds": ...}, or {"skipped": reason}.
    """
    started = time.perf_counter()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        read = 0
        for path in (Path(parsed.database or ""), Path(f"{parsed.database}-wal")):
            if path.is_file():
                with path.open("rb", buffering=0) as source:
                    while chunk := source.read(1 << 20):
                        read += len(chunk)
        return {"bytes": read, "seconds": time.perf_counter() - started}
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
            blocks = conn.execute(text(
                "SELECT coalesce(sum(pg_prewarm(c.oid, 'read')), 0) FROM pg_class c "
                "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i')"
            )).scalar_one()
            block_size = int(conn.execute(text("SHOW block_size")).scalar_one())
    except Exception as exc:  # noqa: BLE001 (a server without pg_prewarm: measured as it is, and said so)
        return {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    finally:
        engine.dispose()
    return {"bytes": int(blocks) * block_size, "seconds": time.perf_counter() - started}
