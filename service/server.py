"""The production server: gunicorn, with the app built in each worker after the fork."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from gunicorn.app.base import BaseApplication

# prometheus_client's multiprocess mode: every worker writes its samples in this folder,
# and /metrics adds them up. prometheus_client reads it when first imported, so it is set
# in the master before any worker forks (the master itself never imports the app).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The facts file the workers share (``authz.shared_facts``), made by ``run`` for each run.
SHARED_FACTS_ENV = "AUTHZ_SHARED_FACTS"


def options(host: str, port: int, workers: int) -> dict:
    """The gunicorn settings of `authz serve` (the benchmark's floor app uses them too)."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "sync",
        "preload_app": False,  # no database pool or oso instance shared across a fork
        # no gunicorn access log: service/observability.py writes one JSON line per request
        "timeout": 30,
        "graceful_timeout": 10,
    }


class Gunicorn(BaseApplication):
    """gunicorn with ``load`` building the WSGI app in each worker."""

    def __init__(self, options: dict, load: Callable[[], object]):
        self.options = options
        self._load = load
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._load()


def _service_app():
    from authz.policy import PolicyWatcher
    from service.app import create_app

    app = create_app()
    # What the worker built at start (modules, the database's metadata, the policy and
    # its Polar engine) mostly lives as long as it does: keep it out of every garbage
    # collection (see ``gc.freeze``). A full collection otherwise walks it again and again
    # while a large search builds its entries: the first client list of the national
    # dataset's largest firm took 448-477 ms with it walked, 296-332 ms without
    # (PostgreSQL, in process, medians of 7 calls in two runs each). The cost: a policy
    # reload leaves the policy loaded at start in memory (21 objects hold it in a cycle,
    # and frozen objects are never collected), one per worker; later ones are collected.
    gc.collect()
    gc.freeze()
    interval = app.config["AUTHZ_POLICY_WATCH_SECONDS"]
    if interval:
        # Each worker watches on its own, so every process converges on the new policy.
        PolicyWatcher(app.extensions["authz"].policy_admin, interval).start()
    return app


def _child_exit(server, worker) -> None:
    """In the master, after a worker exits: drop its live-gauge files (its counts stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _shared_facts_folder() -> str:
    """A folder only this user can open: in TMPDIR if it is set, else in memory where the
    system has a place for it (/dev/shm), else in the usual temporary folder."""
    memory = Path("/dev/shm")
    in_memory = not os.environ.get("TMPDIR") and memory.is_dir() and os.access(memory, os.W_OK)
    return tempfile.mkdtemp(prefix="authz-facts-", dir=memory if in_memory else None)


def run(host: str, port: int, workers: int) -> None:
    master = os.getpid()
    # Fresh for each run: samples left by an earlier server would be added to this one's.
    metrics_dir = tempfile.mkdtemp(prefix="authz-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    # Fresh for each run too: the facts of another server (or another database) must never be
    # taken. With one worker there is nothing to share.
    facts_dir = _shared_facts_folder() if workers > 1 else None
    if facts_dir is not None:
        os.environ[SHARED_FACTS_ENV] = str(Path(facts_dir) / "facts.sqlite3")
    else:
        os.environ.pop(SHARED_FACTS_ENV, None)
    try:
        Gunicorn(options(host, port, workers) | {"child_exit": _child_exit}, _service_app).run()
    finally:
        if os.getpid() == master:  # a worker leaving through here must not remove them
            shutil.rmtree(metrics_dir, ignore_errors=True)
            if facts_dir is not None:
                shutil.rmtree(facts_dir, ignore_errors=True)
