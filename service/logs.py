"""Logging set-up: text or JSON lines, written by a background thread (off the request path)."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import re
import sys
import threading
import time

# LogRecord's own attributes, and uvicorn's ANSI-coloured copy of its message: not extra fields.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


# C0 and C1 control characters, DEL, and the bidirectional overrides and isolates: a client-chosen
# path with %0a (or \r, ESC ...) must not start a new log line or drive the terminal, and one with
# U+202E (right-to-left override) must not make the line read backwards. JSON lines need nothing:
# json.dumps (ensure_ascii) escapes them itself.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    """`\n` -> `\\n`, other control characters -> `\\xNN` (bidi controls -> `\\u202e`): one record is
    always one line, read in its own order."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class TextFormatter(logging.Formatter):
    """`time level logger: message`, with control characters in the message escaped. Tracebacks
    (exc_info) keep their lines: they are ours, not a client's."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {k: v for k, v in vars(record).items() if k not in _RESERVED}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Enqueue the record as it is: the message is formatted on the listener thread, not on the
    request path (the stock QueueHandler formats before enqueueing). Our log calls pass only
    immutable args (str, int, float), so formatting later gives the same text."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_listener: logging.handlers.QueueListener | None = None


def setup_logging(level: str, fmt: str) -> None:
    """Route the `imagegen` and `uvicorn` loggers through one queue to stderr."""
    global _listener
    if _listener is not None:
        _listener.stop()
    stream = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        stream.setFormatter(JsonFormatter())
    else:
        stream.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, stream, respect_handler_level=False)
    _listener.start()
    atexit.register(_listener.stop)
    handler = _DeferredQueueHandler(records)
    # Per-record fields nobody reads here; skipping them makes each record cheaper to create.
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # A flood of bad connections makes uvicorn and asyncio log the same line per connection
    # (or a traceback per failed accept): at most one of each kind per 10 s reaches the log.
    flood_guard = RateLimitFilter(interval_s=10.0)
    for name in ("imagegen", "uvicorn", "uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
        logger.filters[:] = [] if name == "imagegen" else [flood_guard]


class RateLimitFilter(logging.Filter):
    """Passes the first record of each kind (logger, level, first line of the message template)
    per `interval_s`, drops the others of that kind and says how many in the next one it passes."""

    MAX_KINDS = 1024  # kinds remembered; past it the memory is cleared rather than grown

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg).split("\n", 1)[0][:80])
        now = time.monotonic()
        with self._lock:
            if len(self._kinds) >= self.MAX_KINDS:
                self._kinds.clear()
            last, dropped = self._kinds.get(kind, (float("-inf"), 0))
            if now - last < self.interval_s:
                self._kinds[kind] = (last, dropped + 1)
                return False
            self._kinds[kind] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} similar line(s) dropped]"
        return True


class RateLimitedLog:
    """A log call that writes at most once per `interval_s` and counts the calls in between
    (for events a hostile client can repeat thousands of times a second)."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last = float("-inf")
        self._skipped = 0

    def _log(self, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._skipped += 1
            return
        skipped, self._last, self._skipped = self._skipped, now, 0
        suffix = f" [{skipped} more since the last such line]" if skipped else ""
        self.logger.log(level, msg + suffix, *args)

    def warning(self, msg: str, *args: object) -> None:
        self._log(logging.WARNING, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self._log(logging.INFO, msg, *args)
