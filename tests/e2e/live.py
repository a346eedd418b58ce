"""A live `authz serve` holding the demo story, and tiny stand-in servers that misbehave.

Used by the client tests (tests/e2e/test_client.py, test_standard_authzen_client.py):
the database, keys and demo come from the console script, as an operator would do it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.e2e.harness import Cli, Server, environment


@dataclass(frozen=True)
class Live:
    """A running server on the demo data, with one key of each role."""

    server: Server
    cli: Cli
    portal_key: str
    admin_key: str
    pep_key: str

    @property
    def base_url(self) -> str:
        return self.server.base_url


@contextmanager
def demo_server(workdir: Path, workers: int = 2) -> Iterator[Live]:
    """A fresh SQLite file: `db upgrade`, keys, `demo`, then `serve`; stopped on exit."""
    cli = Cli(environment(f"sqlite:///{workdir / 'authz.sqlite3'}"), workdir)
    cli.ok("db", "upgrade")
    keys = {role: cli.create_key(role, f"client-e2e-{role}") for role in ("portal", "admin", "pep")}
    cli.ok("demo")
    server = Server(cli.env, workdir, workdir / "server.log", workers=workers)
    try:
        server.start()
        yield Live(server, cli, keys["portal"], keys["admin"], keys["pep"])
    finally:
        server.stop()


@dataclass
class Seen:
    """What a stand-in server received: one (method, path, headers, body) per request."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@contextmanager
def stand_in(status: int, body: bytes | str | dict, *, delay: float = 0.0, port: int = 0,
             content_type: str = "application/json") -> Iterator[tuple[str, Seen]]:
    """An HTTP server on 127.0.0.1 (``port``, default any free one) answering every request
    with ``status`` and ``body`` after ``delay`` seconds; yield its base URL and what it received."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
            if delay:
                time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up waiting
                self.wfile.write(raw)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
