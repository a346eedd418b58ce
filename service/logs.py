"""JSON log lines on stderr for the ``authz`` loggers, and ``log_all``, which writes a
request's lines.

Every record becomes one JSON object per line (``JsonLines``). Headers and bodies are
never logged, so neither API keys nor activation tokens are.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from contextvars import ContextVar

from flask import g, has_request_context

from service import jsontext

# An ``extra`` field: a list of dicts, written one line each, every line with the record's
# other fields. The decisions of a request are one record: a record costs about 26 µs through
# ``logging`` on the 2-core machine, which was more than half of what a decision of a
# 100-item ``evaluations`` call cost (45.5 µs per item, 19.8 without decision lines).
LINES = "lines"

# What every LogRecord has: any other attribute of a record came in its ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# (logger, level, message, extra fields): one record for ``log_all``.
Entry = tuple[logging.Logger, int, str, dict]


_second: tuple[int, str] = (-1, "")  # the last second written, and its text


def _utc(created: float) -> str:
    """``created`` in ISO 8601, UTC, to the microsecond. The text of the second is kept
    from one line to the next, as most lines share it: 1.3 µs less a line than
    ``datetime.isoformat`` (a decision line, on the 2-core machine)."""
    global _second
    seconds, micro = divmod(round(created * 1_000_000), 1_000_000)
    kept = _second
    if kept[0] != seconds:
        kept = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{kept[1]}.{micro:06d}+00:00"


class JsonLines(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, each ``extra`` field, and ``exc_info`` (the traceback) if any; or, for a
    record with ``LINES``, one such object per item of it, with the item's fields added.

    Our own rather than python-json-logger's: a decision call writes two lines (an
    ``evaluations`` call one per item), and its generic field merging and encoder cost
    28 µs a line against 19 µs here (a decision line, on the 2-core benchmark machine).
    The text is ``service.jsontext``'s: what JSON cannot hold is written as ``str`` gives it.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = {name: value for name, value in vars(record).items() if name not in _RECORD_ATTRIBUTES}
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        return self.text(record.created, record.levelname, record.name, record.getMessage(), fields)

    def text(self, created: float, level: str, logger: str, message: str, fields: dict) -> str:
        """The line (or, with ``LINES``, the lines) of one record, without the last newline."""
        line = {"time": _utc(created), "level": level, "logger": logger, "message": message} | fields
        items = line.pop(LINES, None)
        if isinstance(items, list) and items:
            return "\n".join(jsontext.dumps(line | item if isinstance(item, dict) else line | {LINES: item}, str)
                             for item in items)
        return jsontext.dumps(line, str)


class _RequestId(logging.Filter):
    """Give every line logged while answering a request that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            found = _current_request_id()
            if found is not _NONE:
                record.request_id = found
        return True

    @staticmethod
    def with_request_id(fields: dict) -> dict:
        """``fields`` as ``filter`` leaves a record of them."""
        if "request_id" in fields:
            return fields
        found = _current_request_id()
        return fields if found is _NONE else fields | {"request_id": found}


_NONE = object()
# The id of the request being answered outside Flask's request context (service.fastpath).
REQUEST_ID: ContextVar[str | None] = ContextVar("authz_request_id", default=None)


def _current_request_id() -> object:
    """The id of the request being answered (None if it has none yet), or ``_NONE``
    outside any request."""
    if has_request_context():
        return g.get("request_id")
    found = REQUEST_ID.get()
    return _NONE if found is None else found


class _CurrentStderr(logging.StreamHandler):
    """Write to whatever ``sys.stderr`` is at the time (as ``logging.lastResort`` does)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass

    def emit(self, record: logging.LogRecord) -> None:
        # StreamHandler's, with the flush done in ``write``: ``handle`` already holds the
        # lock that its ``flush`` takes again.
        try:
            self.write(self.format(record))
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 (as logging's handlers: a line that fails never fails a request)
            self.handleError(record)

    def write(self, text: str) -> None:
        """Write ``text`` and a newline, and flush; the caller holds the lock."""
        stream = sys.stderr
        stream.write(text + self.terminator)
        stream.flush()


def configure_logging(level: int) -> None:
    """JSON lines on stderr for the ``authz`` loggers; the handler is added once per process.

    Records still propagate to the root logger, which gunicorn leaves without handlers
    (so each event is written once) and where test tools such as ``caplog`` listen.
    """
    # No line in this process shows a record's thread, process name or calling frame
    # (gunicorn's show the pid, kept): skip collecting them, as the logging HOWTO's
    # "Optimization" section suggests. About a fifth of a line's cost.
    logging.logThreads = logging.logMultiprocessing = False
    logging._srcfile = None
    logger = logging.getLogger("authz")
    if not any(isinstance(handler, _CurrentStderr) for handler in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(JsonLines())
        handler.addFilter(_RequestId())
        logger.addHandler(handler)
    logger.setLevel(level)


def log_all(entries: Sequence[Entry]) -> None:
    """Log these records, in order, each if its logger is enabled for its level.

    When the one handler ``configure_logging`` adds is the only place every one of them
    goes, as under gunicorn, it is handed their text at once: the same lines as through
    ``logging``, in one write, without a ``LogRecord`` each and the walk through loggers,
    filters and handlers. Otherwise (a test's capture handler, an operator's own logging
    set-up) each goes through ``logging``, which decides where.

    A cached decision took 1,125,945 instructions in process with its two records through
    ``logging``, and 1,022,532 this way (with the metrics' label look-ups remembered too;
    callgrind, ``bench/instructions.py``).
    """
    wanted = [entry for entry in entries if entry[0].isEnabledFor(entry[1])]
    if not wanted:
        return
    handler = _sole_handler(wanted)
    if handler is None:
        for logger, level, message, fields in wanted:
            logger.log(level, message, extra=fields)
        return
    created = time.time()
    formatter: JsonLines = handler.formatter  # type: ignore[assignment]  # checked by _sole_handler
    handler.acquire()
    try:
        handler.write("\n".join(formatter.text(created, logging.getLevelName(level), logger.name, message,
                                               _RequestId.with_request_id(fields))
                                for logger, level, message, fields in wanted))
    except RecursionError:
        raise
    except Exception:  # noqa: BLE001 (as ``emit``: a line that fails never fails a request)
        logger, _level, message, _fields = wanted[0]
        handler.handleError(logging.makeLogRecord({"name": logger.name, "msg": message}))
    finally:
        handler.release()


def _sole_handler(entries: Sequence[Entry]) -> _CurrentStderr | None:
    """Our stderr handler, if it is the one handler every entry reaches, as set up by
    ``configure_logging`` (its formatter and filter, no level above an entry's), and
    no logger on the way is disabled or filters; else None."""
    found: _CurrentStderr | None = None
    for logger, level, _message, _fields in entries:
        if logger.disabled or logger.filters:
            return None
        reached = []
        current: logging.Logger | None = logger
        while current is not None:
            reached.extend(current.handlers)
            current = current.parent if current.propagate else None
        if len(reached) != 1 or not isinstance(reached[0], _CurrentStderr) or reached[0].level > level:
            return None
        if found is not None and reached[0] is not found:
            return None
        found = reached[0]
    if found is None or type(found.formatter) is not JsonLines:
        return None
    filters = found.filters
    return found if len(filters) == 1 and type(filters[0]) is _RequestId else None
