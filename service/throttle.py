"""Slow down guessing: a caller whose wrong API keys or activation tokens pile up is
refused for a while (429 with Retry-After), whatever it sends.

Counted per client address and per worker process, in memory: the limit bounds how
fast one address can guess against one worker; N workers allow N times as many tries,
still far too few against 256-bit secrets. Behind a load balancer, configure it to
pass the client address (and the app to read it) or the balancer's address is counted.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque

from flask import Flask, request

from service.errors import ApiError

# Responses that mean "wrong secret": an unknown key, or a refused activation link.
GUESS_STATUSES = {None: {401}, "manage.activate": {401, 403, 404, 410}}
MAYBE_GUESSES = frozenset().union(*GUESS_STATUSES.values())  # the statuses worth a closer look


class FailureThrottle:
    def __init__(self, limit: int, window: float, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures[address]
        horizon = self.clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        if address not in self._failures:
            # Nearly every caller: nothing to count, no lock to take. A failure added by
            # another thread meanwhile lets one request through, as if it came first.
            return None
        with self._lock:
            failures = self._recent(address)
            if len(failures) < self.limit:
                if not failures:
                    self._failures.pop(address, None)
                return None
            return max(1, math.ceil(failures[0] + self.window - self.clock()))

    def fail(self, address: str) -> None:
        with self._lock:
            self._recent(address).append(self.clock())


def install(app: Flask) -> None:
    limit = app.config["AUTHZ_GUESS_LIMIT"]
    if not limit:
        return
    throttle = FailureThrottle(limit, app.config["AUTHZ_GUESS_WINDOW_SECONDS"])
    app.extensions["authz_throttle"] = throttle

    @app.before_request
    def _refuse_guessers():
        wait = throttle.retry_after(request.remote_addr or "-")
        if wait is not None:
            raise ApiError(429, "too_many_failures",
                           "too many wrong keys or activation links from this address; try again later",
                           headers={"Retry-After": str(wait)})

    @app.after_request
    def _count_guesses(response):
        status = response.status_code
        if status in MAYBE_GUESSES and (status in GUESS_STATUSES[None]
                                        or status in GUESS_STATUSES.get(request.endpoint, ())):
            throttle.fail(request.remote_addr or "-")
        return response
