"""Logging set-up: text or JSON lines, written by a background thread (off the request path)."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time

# LogRecord's own attributes, and uvicorn's ANSI-coloured copy of its message: not extra fields.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


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
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, stream, respect_handler_level=False)
    _listener.start()
    atexit.register(_listener.stop)
    handler = _DeferredQueueHandler(records)
    # Per-record fields nobody reads here; skipping them makes each record cheaper to create.
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for name in ("imagegen", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
