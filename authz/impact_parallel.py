"""Run one task per share of the companies, each in its own forked process.

Loading the facts and grouping a national store's two million pairs is Python work,
one core per process. The shares are contiguous ranges of SIRET (``pairs.shares``),
so results put end to end keep the order of a single run. The processes are forked
rather than spawned: they inherit the compiled policies (an oso instance cannot be
pickled). Each drops the database connections it inherited and opens its own.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from itertools import pairwise
from typing import TypeVar

from authz.errors import PolicyError, StoreUnavailable
from authz.store import Database

T = TypeVar("T")
Task = Callable[[str | None, str | None], T]


def available() -> bool:
    """Whether this platform can fork (Linux and macOS can; Windows cannot)."""
    return "fork" in multiprocessing.get_all_start_methods()


def run(db: Database, bounds: list[str | None], task: Task) -> list[T]:
    """``task(first, until)`` for each consecutive pair of ``bounds``, in parallel, in order."""
    context = multiprocessing.get_context("fork")
    running = []
    for first, until in pairwise(bounds):
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=_share, args=(db, task, first, until, writer), daemon=True)
        process.start()
        writer.close()
        running.append((process, reader))
    results, failure = [], None
    for process, reader in running:
        try:
            outcome, value = reader.recv()
        except EOFError:
            outcome, value = "failed", PolicyError(f"an impact worker died (exit code {process.exitcode})")
        process.join()
        if outcome == "ok":
            results.append(value)
        else:
            failure = failure or value
    if failure is not None:
        raise failure
    return results


def _share(db: Database, task: Task, first: str | None, until: str | None, writer) -> None:
    db.engine.dispose(close=False)  # the parent's connections stay the parent's
    try:
        writer.send(("ok", task(first, until)))
    except StoreUnavailable as exc:
        writer.send(("failed", StoreUnavailable(exc.message)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        writer.send(("failed", PolicyError(f"an impact worker failed: {type(exc).__name__}: {exc}")))
    finally:
        writer.close()
