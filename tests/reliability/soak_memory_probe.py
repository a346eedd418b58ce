"""Where a worker's memory goes under the soak's traffic: a diagnostic, not a test.

    .venv/bin/python -m tests.reliability.soak_memory_probe --seconds 180
    .venv/bin/python -m tests.reliability.soak_memory_probe --seconds 180 --memo-size 0

The soak's lanes (``soak_traffic``) drive ONE app built in this process (``create_app``
served by werkzeug on a fresh SQLite file, one request at a time as a gunicorn sync
worker serves them), so the process's VmRSS can be read next to the in-memory
structures that may hold it: the policy engine's memo of
answers per shape of facts (``Engine._memo``, bounded by ``Engine.memo_size``) and the
per-process answer cache. ``--memo-size N`` sets the engine's bound before the load
(0: nothing is kept), to see how much of the growth the memo accounts for. The
structures are read through private attributes, as a diagnostic may: a missing one
prints as ``?``. ``--threaded`` serves each request on a new thread instead (werkzeug's
threaded mode, which ``authz serve`` never uses): that adds growth of its own (glibc's
per-thread arenas, probably; see RELIABILITY.md, Soak).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from tests.e2e.harness import Api, Cli, environment
from tests.reliability.soak_traffic import Lane, Tally


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _size(thing, *path: str) -> str:
    for name in path:
        thing = getattr(thing, name, None)
        if thing is None:
            return "?"
    return str(len(thing))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak_memory_probe")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--memo-size", type=int, default=None, help="the engine's memo bound (default: as built)")
    parser.add_argument("--every", type=float, default=15.0)
    parser.add_argument("--threaded", action="store_true", help="a new thread per request (not as served)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="authz-memory-probe-"))
    cli = Cli(environment(f"sqlite:///{workdir / 'probe.sqlite3'}"), workdir)
    cli.ok("db", "upgrade")
    keys = {role: cli.create_key(role, f"probe-{role}") for role in ("pep", "portal")}
    os.environ.update({"AUTHZ_DATABASE_URL": cli.env["AUTHZ_DATABASE_URL"], "AUTHZ_LOG_LEVEL": "WARNING",
                       "AUTHZ_DECISION_LOG_LEVEL": "WARNING"})
    from werkzeug.serving import make_server

    from service.app import create_app

    app = create_app()
    services = app.extensions["authz"]
    if args.memo_size is not None:
        services.policy().memo_size = args.memo_size
    httpd = make_server("127.0.0.1", 0, app, threaded=args.threaded)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"

    tally = Tally()
    lanes = [Lane(n, Api(base, keys["pep"]), Api(base, keys["portal"]), tally, random.Random(n),
                  timedelta(seconds=90), 0.15) for n in range(args.lanes)]
    for lane in lanes:
        lane.set_up()
        lane.prune()
    deadline = time.monotonic() + args.seconds
    threads = [threading.Thread(target=lane.run, args=(deadline,), daemon=True) for lane in lanes]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    print(f"memo size bound: {getattr(services.policy(), 'memo_size', '?')}", flush=True)
    while any(thread.is_alive() for thread in threads):
        engine = services.policy()
        cache = services.decisions.cache
        print(f"{time.monotonic() - began:5.0f} s  requests {sum(tally.calls.values()):6d}  RSS {rss_mib():6.1f} MiB  "
              f"engine memo {_size(engine, '_memo'):>6} keys (weight {getattr(engine, '_memo_weight', '?')})  answer cache {_size(cache, '_answers', 'entries')} "
              f"answers, {_size(cache, '_searches', 'entries')} searches  errors {tally.total_errors}  "
              f"wrong {tally.total_wrong}", flush=True)
        time.sleep(args.every)
    httpd.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
