"""JSON logs: one object per line with time, level, logger, message and extras."""
from __future__ import annotations

import json
import logging
import sys
import threading
import time

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _RESERVED and not k.startswith("_"):
                doc[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(level: str = "INFO", stream=sys.stderr, fallback: str = "INFO") -> str:
    """JSON logs on ``stream`` at ``level`` (the services' ``$STORELENS_LOG_LEVEL``); the level name used. A name
    that is no log level (``trace``) logs at ``fallback``, with an error saying so: a typo must not crash-loop a
    service (nor the CLI of its initContainers)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    name = str(level).upper()
    known = isinstance(logging.getLevelName(name), int)
    root.setLevel(name if known else fallback)
    for noisy in ("ultralytics", "urllib3", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _log_uncaught()
    if not known:
        logging.getLogger(__name__).error(
            f"$STORELENS_LOG_LEVEL={level!r} is not a log level: logging at {fallback} (use one of DEBUG, INFO, "
            "WARNING, ERROR, CRITICAL)")
    return name if known else fallback


def _log_uncaught() -> None:
    """An exception nothing caught (the main thread's, a thread's) logged as one JSON line with its traceback
    (``exc``), not printed as Python's many plain lines; hooks someone else installed are kept."""
    log = logging.getLogger("storelens")
    if sys.excepthook is sys.__excepthook__:
        def excepthook(kind, value, tb) -> None:
            if issubclass(kind, KeyboardInterrupt):
                sys.__excepthook__(kind, value, tb)
                return
            log.critical("uncaught exception: the process exits", exc_info=(kind, value, tb))

        sys.excepthook = excepthook
    if threading.excepthook is threading.__excepthook__:
        def thread_excepthook(args: threading.ExceptHookArgs) -> None:
            if args.exc_type is SystemExit:
                return
            log.error("uncaught exception in a thread: the thread ends",
                      exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
                      extra={"thread_name": args.thread.name if args.thread is not None else None})

        threading.excepthook = thread_excepthook
