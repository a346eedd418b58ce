"""Steady load on a running `authz serve`: threads asking decisions whose answer is known,
and threads making management writes that each name a new person, every call recorded
with when it was sent and answered, so a test can look at any window of time.

Each call is a new HTTP connection (tests.e2e.harness.Api), so the calls spread over
every gunicorn worker.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tests.e2e.harness import Api, Reply

PAUSE = 0.01  # between two calls of one thread: a steady load, not a flood


@dataclass(frozen=True)
class Question:
    user: str
    right: str
    company: str
    expected: bool


@dataclass
class Outcome:
    """One call: which thread kind made it, when, and what came back."""

    kind: str  # "decision", or the kind of write
    sent: float  # time.monotonic()
    answered: float
    status: int | None  # None: no HTTP answer (timeout, connection reset)
    decision: bool | None = None
    expected: bool | None = None
    label: str = ""  # the person a write names
    error: str = ""

    @property
    def wrong_allow(self) -> bool:
        return self.kind == "decision" and self.decision is True and self.expected is False

    @property
    def wrong(self) -> bool:
        return self.kind == "decision" and self.status == 200 and self.decision is not self.expected

    def within(self, start: float, end: float) -> bool:
        """Sent at or after ``start`` and answered at or before ``end``."""
        return self.sent >= start and self.answered <= end


def ask(api: Api, question: Question) -> Outcome:
    """Send one evaluation and record it."""
    sent = time.monotonic()
    try:
        reply = api.post("/access/v1/evaluation", {
            "subject": {"type": "user", "id": question.user},
            "action": {"name": question.right},
            "resource": {"type": "company", "id": question.company},
        })
    except Exception as exc:  # noqa: BLE001 - any failure to get an HTTP answer is recorded
        return Outcome("decision", sent, time.monotonic(), None, expected=question.expected,
                       error=type(exc).__name__)
    decision = reply.body.get("decision") if reply.status == 200 and reply.body else None
    return Outcome("decision", sent, time.monotonic(), reply.status, decision, question.expected,
                   error=_code(reply))


def write(kind: str, label: str, call: Callable[[], Reply]) -> Outcome:
    """Make one write and record it."""
    sent = time.monotonic()
    try:
        reply = call()
    except Exception as exc:  # noqa: BLE001
        return Outcome(kind, sent, time.monotonic(), None, label=label, error=type(exc).__name__)
    return Outcome(kind, sent, time.monotonic(), reply.status, label=label, error=_code(reply))


def _code(reply: Reply) -> str:
    if reply.status < 400:
        return ""
    return (reply.body or {}).get("error", {}).get("code", "") if isinstance(reply.body, dict) else ""


class Load:
    """Threads running until ``stop``: ``readers`` asking ``questions`` in turn, and one
    thread per writer, each writer a function of a counter returning (label, call)."""

    def __init__(self, api: Api, questions: Iterable[Question], readers: int,
                 writers: dict[str, Callable[[int], tuple[str, Callable[[], Reply]]]]):
        self.api = api
        self.questions = list(questions)
        self.readers = readers
        self.writers = writers
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _read(self, offset: int) -> None:
        for n in itertools.count(offset):
            if self._stop.is_set():
                return
            self._record(ask(self.api, self.questions[n % len(self.questions)]))
            time.sleep(PAUSE)

    def _write(self, kind: str, make: Callable[[int], tuple[str, Callable[[], Reply]]]) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            label, call = make(n)
            self._record(write(kind, label, call))
            time.sleep(PAUSE)

    def start(self) -> Load:
        for offset in range(self.readers):
            self._threads.append(threading.Thread(target=self._read, args=(offset,), daemon=True))
        for kind, make in self.writers.items():
            self._threads.append(threading.Thread(target=self._write, args=(kind, make), daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def so_far(self) -> list[Outcome]:
        """The calls answered until now."""
        with self._lock:
            return list(self.outcomes)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        with self._lock:
            return sorted(self.outcomes, key=lambda outcome: outcome.sent)
