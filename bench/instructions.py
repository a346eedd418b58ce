"""Instructions per request in process, counted by valgrind's callgrind: the service's WSGI
app answering cached decisions, against the floor app, both called without a server; and
the service answering questions on pairs it has never met (``cold``: each reads its facts).

Time on these shared machines moves by tens of percent from run to run; the same count
taken twice differed by 0.1% or less (the hash seed fixed). So this is the figure that
shows what a change to the request path saved. It leaves out what HTTP costs both apps
(gunicorn, sockets, the kernel) and what the service pays only now and then: the data
version is read once (its lease is held for the whole run) and every question is asked
once before counting. The cold count asks, after as many warm-up questions, questions whose
(user, company) the app has not met: what a miss costs (the facts read, the answers worked
out, the users and companies validated), the figure a cached count cannot show.

    python -m bench.instructions --url sqlite:///var/bench/authz_national.sqlite3 \
        --bodies var/bench/stream-national.jsonl

Each figure is the difference between two runs that differ only in the number of requests
counted, divided by that difference: what starting the app costs drops out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

QUESTIONS = 200  # distinct bodies, each asked once before counting
FEW, MANY = 100, 600  # requests counted in the two runs
COLD_WARM = 400  # pairs asked before the cold count (the policy's shapes, the first loads)
KEY_ENV = "AUTHZ_BENCH_INSTRUCTIONS_KEY"
APPS = ("service", "floor", "cold")  # cold: the service, every counted question on a new pair


def available() -> bool:
    return shutil.which("valgrind") is not None


def _environ(body: bytes, key: str) -> dict:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/access/v1/evaluation", "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Bearer {key}"}


def _child(app_name: str, stream: Path, requests: int) -> None:
    """Warm the app, then answer ``requests`` questions: what callgrind counts. Cached: the
    first ``QUESTIONS`` bodies, each asked once, then asked in turn. Cold: ``COLD_WARM``
    pairs asked once, then ``requests`` pairs never asked."""
    key = os.environ[KEY_ENV]
    if app_name == "floor":
        from bench.floor_app import create_app
    else:
        from service.app import create_app
    app = create_app()
    from authz import store

    # Held once the app is built (a write waits out a lease: building may record the policy):
    # one version read for the run, the reads being counted apart, in HTTP.
    store.VERSION_LEASE_SECONDS = 1e9

    def start(status: str, headers: list, exc_info=None) -> None:
        if not status.startswith("200"):
            raise SystemExit(f"{app_name} answered {status}")

    def ask(body: bytes) -> None:
        b"".join(app(_environ(body, key), start))

    if app_name == "cold":
        bodies = _new_pairs(stream, COLD_WARM + requests)
        for body in bodies:  # the first COLD_WARM warm up; each later one is a pair never met
            ask(body)
        return
    bodies = distinct_bodies(stream)
    for body in bodies:
        ask(body)
    for n in range(requests):
        ask(bodies[n % len(bodies)])


def _count(app_name: str, url: str, bodies: Path, requests: int, key: str) -> int:
    """Instructions callgrind counted for a whole child run."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "callgrind.log"
        env = dict(os.environ, AUTHZ_DATABASE_URL=url, PYTHONHASHSEED="0", **{KEY_ENV: key})
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", f"--log-file={log}",
             sys.executable, "-m", "bench.instructions", "--child", app_name, "--bodies", str(bodies),
             "--requests", str(requests)],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent,
        )
        found = re.search(r"Collected : (\d+)", log.read_text())
        if found is None:
            raise RuntimeError(f"callgrind counted nothing for {app_name}: {log.read_text()[-400:]}")
        return int(found.group(1))


def per_request(url: str, bodies: Path, key: str) -> dict:
    """{app: instructions per request}, the apps' runs two at a time."""
    jobs = [(app_name, requests) for app_name in APPS for requests in (FEW, MANY)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _count(job[0], url, bodies, job[1], key), jobs), strict=True))
    return {app_name: (counts[(app_name, MANY)] - counts[(app_name, FEW)]) / (MANY - FEW) for app_name in APPS}


def _new_pairs(path: Path, count: int) -> list[bytes]:
    """The first ``count`` bodies of a stream file whose (subject, resource) is not an earlier one's."""
    found: dict[tuple, bytes] = {}
    with path.open("rb") as lines:
        for line in lines:
            body = json.loads(line)
            found.setdefault((body["subject"]["id"], body["resource"]["id"]), line.strip())
            if len(found) == count:
                return list(found.values())
    raise SystemExit(f"{path} holds {len(found)} distinct pairs, {count} needed")


def distinct_bodies(path: Path) -> list[bytes]:
    """The first ``QUESTIONS`` distinct bodies of a stream file (one JSON body per line)."""
    found: dict[bytes, None] = {}
    with path.open("rb") as lines:
        for line in lines:
            found.setdefault(line.strip(), None)
            if len(found) == QUESTIONS:
                break
    return list(found)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="the database (the service's data; the floor reads none)")
    parser.add_argument("--bodies", type=Path, required=True, help="a stream file written by python -m bench")
    parser.add_argument("--child", choices=APPS, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=MANY, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with open(os.devnull, "w") as sys.stderr:  # the service's log lines
            _child(args.child, args.bodies, args.requests)
        return
    if not args.url:
        parser.error("--url is required")
    from bench.__main__ import install_key

    found = per_request(args.url, args.bodies, install_key(args.url))
    print(f"service {found['service']:,.0f} floor {found['floor']:,.0f} instructions per request "
          f"(floor / service {found['floor'] / found['service']:.2f}); a pair never met {found['cold']:,.0f}")


if __name__ == "__main__":
    main()
