"""A private PostgreSQL server for one test module, which the tests may stop and start.

The shared server other people's tests use is never touched: this one lives in its own
temporary folder, listens on a free port of 127.0.0.1 (and a Unix socket in that
folder), trusts local connections for the user ``postgres``, and is always stopped
(``pg_ctl stop -m immediate``) and removed in teardown.

initdb refuses to run as root: as root, initdb and pg_ctl run as the ``postgres``
system user (``runuser -u postgres --``, or ``su postgres -c``), on a folder that user
owns. The binaries come from AUTHZ_PG_BIN (default /usr/lib/postgresql/15/bin); when
they are missing the tests that need the server are skipped, saying why.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.e2e.harness import free_port

PG_BIN = Path(os.environ.get("AUTHZ_PG_BIN", "/usr/lib/postgresql/15/bin"))
SYSTEM_USER = "postgres"
START_SECONDS = 60


def binary(name: str) -> str:
    return str(PG_BIN / name)


def missing_reason() -> str | None:
    """Why a private server cannot run here, or None if it can."""
    for name in ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore"):
        if not os.access(PG_BIN / name, os.X_OK):
            return f"PostgreSQL binary {PG_BIN / name} is missing (set AUTHZ_PG_BIN to the folder holding initdb)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return f"running as root and there is no {SYSTEM_USER!r} system user to run initdb as"
        if not (shutil.which("runuser") or shutil.which("su")):
            return "running as root and neither runuser nor su is available to run initdb as postgres"
    return None


def _as_owner(command: list[str]) -> list[str]:
    """``command`` run as the postgres system user when we are root, as ourselves otherwise."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", SYSTEM_USER, "--", *command]
    return ["su", SYSTEM_USER, "-s", "/bin/sh", "-c", shlex.join(command)]


@dataclass
class PrivatePostgres:
    """One initdb'd cluster in ``root``; ``start``/``stop`` inject the faults."""

    root: Path
    port: int = field(default_factory=free_port)
    running: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def _run(self, *command: str, timeout: float = START_SECONDS) -> subprocess.CompletedProcess:
        done = subprocess.run(_as_owner(list(command)), capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)
        assert done.returncode == 0, (
            f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}\n{self.log()}")
        return done

    def initdb(self) -> None:
        self._run(binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8")

    def start(self) -> float:
        """Start the server and wait until it accepts connections; return the seconds it took."""
        began = time.monotonic()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(binary("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-o", options,
                  "-w", "-t", str(START_SECONDS), "start")
        self.running = True
        return time.monotonic() - began

    def stop(self, mode: str = "immediate") -> float:
        """Stop the server (``immediate``: as if it crashed; ``fast``: clean); return the seconds it took."""
        began = time.monotonic()
        self._run(binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False
        return time.monotonic() - began

    def url(self, database: str = "postgres", query: str = "") -> str:
        """A SQLAlchemy URL for ``database`` on this server (``query``: e.g. ``options=...``)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}" + (f"?{query}" if query else "")

    def libpq(self, database: str = "postgres") -> str:
        """A libpq connection string for psycopg, pg_dump and pg_restore."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def connect(self, database: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.libpq(database), autocommit=autocommit, connect_timeout=5)

    def create_database(self, prefix: str = "authz") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no server log)"


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL 15 server for the module, running; stopped and removed afterwards."""
    reason = missing_reason()
    if reason:
        if os.environ.get("AUTHZ_TEST_POSTGRES_REQUIRED") == "1":
            pytest.fail(reason)  # CI promises PostgreSQL: a missing server is a failure there
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="authz-pg-", dir="/tmp"))  # short: the socket path is limited
    if os.geteuid() == 0:
        os.chown(root, pwd.getpwnam(SYSTEM_USER).pw_uid, pwd.getpwnam(SYSTEM_USER).pw_gid)
    server = PrivatePostgres(root)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            subprocess.run(_as_owner([binary("pg_ctl"), "-D", str(server.data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=START_SECONDS)
        shutil.rmtree(root, ignore_errors=True)
