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
