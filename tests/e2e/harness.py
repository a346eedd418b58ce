"""Drive the real thing from outside: the `authz` console script and a gunicorn server.

Only the standard library talks to the service (subprocess, urllib), as a portal or
an operator would; nothing here imports the app.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_SECONDS = 20
REQUEST_SECONDS = 10
COMMAND_SECONDS = 60

# The server is local: never route to it through an HTTP proxy named in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def authz_script() -> str:
    """Find the `authz` console script of the interpreter running the tests."""
    beside = Path(sys.executable).parent / "authz"
    if beside.is_file():
        return str(beside)
    found = shutil.which("authz")
    if found is None:
        raise RuntimeError("the `authz` console script is not installed (pip install -e .)")
    return found


def environment(database_url: str, **settings: str) -> dict[str, str]:
    """This process's environment without any AUTHZ_* setting, then ``database_url`` and ``settings``.

    Except ``AUTHZ_CACHE_DIR``, which tests/conftest.py points into the test's own folder:
    impact reports must not keep their census in the home of whoever runs the tests.
    """
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("AUTHZ_") or name == "AUTHZ_CACHE_DIR"}
    env["AUTHZ_DATABASE_URL"] = database_url
    env.update(settings)
    return env


@dataclass
class Cli:
    """Run `authz ...` with one environment, from a working directory outside the project."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [authz_script(), *args], env=env or self.env, cwd=self.cwd, capture_output=True, text=True,
            timeout=COMMAND_SECONDS,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess:
        """Run a command that must succeed; fail with its output otherwise."""
        done = self(*args)
        assert done.returncode == 0, f"authz {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        return done

    def create_key(self, role: str, name: str) -> str:
        """Create an API key and return it (the last line of stdout)."""
        return last_line(self.ok("keys", "create", "--role", role, "--name", name).stdout)


def last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the command printed nothing on stdout"
    return lines[-1].strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict | None

    @property
    def error(self) -> dict:
        assert self.body and "error" in self.body, f"no error envelope in {self.status} {self.body}"
        return self.body["error"]


@dataclass
class Api:
    """A portal's view of the service: one new HTTP connection per call."""

    base_url: str
    key: str | None = None

    def call(self, method: str, path: str, body: dict | None = None, *, user: str | None = None,
             key: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        sent = {"Accept": "application/json", "Connection": "close", **(headers or {})}
        key = key or self.key
        if key:
            sent["Authorization"] = f"Bearer {key}"
        if user:
            sent["Acting-User"] = user
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=sent)
        try:
            with _OPENER.open(request, timeout=REQUEST_SECONDS) as response:
                return _reply(response.status, response.headers, response.read())
        except urllib.error.HTTPError as refused:
            with refused:
                return _reply(refused.code, refused.headers, refused.read())

    def get(self, path: str, **kw) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: dict, **kw) -> Reply:
        return self.call("POST", path, body, **kw)

    def patch(self, path: str, body: dict, **kw) -> Reply:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw) -> Reply:
        return self.call("DELETE", path, **kw)

    def decide(self, user: str, right: str, siret: str) -> bool:
        """Ask the AuthZEN evaluation endpoint; return the decision."""
        reply = self.post("/access/v1/evaluation", {
            "subject": {"type": "user", "id": user},
            "action": {"name": right},
            "resource": {"type": "company", "id": siret},
        })
        assert reply.status == 200, f"evaluation answered {reply.status}: {reply.body}"
        return reply.body["decision"]


def _reply(status: int, headers, raw: bytes) -> Reply:
    text = raw.decode("utf-8")
    body = json.loads(text) if text and "json" in (headers.get("Content-Type") or "") else None
    return Reply(status, {name.lower(): value for name, value in headers.items()}, body)


@dataclass
class Server:
    """`authz serve` in a subprocess, its output in a log file; always stopped by ``stop``."""

    env: dict[str, str]
    cwd: Path
    log_path: Path
    workers: int = 2
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                [authz_script(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(self.workers)],
                env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so the workers can be stopped with it
            )
        finally:
            log.close()
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"authz serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if Api(self.base_url).get("/healthz").status == 200 and self._workers_forked():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"authz serve did not answer /healthz within {STARTUP_SECONDS} s:\n{self.log()}")

    def _workers_forked(self) -> bool:
        pids = self.worker_pids()
        return pids is None or len(pids) >= self.workers

    def worker_pids(self) -> list[int] | None:
        """The live children of the server process (its gunicorn workers); None without /proc."""
        if not Path("/proc").is_dir():
            return None
        if self.process is None:
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                children.append(int(stat.parent.name))
        return children

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Ask gunicorn to stop (SIGTERM), then kill its process group if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
