"""The error policy of every runner, written once.

==============================================  =====================================================
what went wrong                                  what the runner does
==============================================  =====================================================
input cannot be decoded, unknown camera          dead letter (reason ``decode`` / ``unknown_camera``), acknowledge, go on
(:class:`~storelens.errors.DecodeError`)
the message's ``message-type`` header names      dead letter (reason ``message_type``, naming both types), never decoded
another type than its topic carries
(:class:`~storelens.errors.WrongMessageType`)
the stage raised on one message                  the stage's ``on_error``: ``dead_letter`` (reason ``process``) or ``stop``
a store *inside* the stage failed                stop; the message is not acknowledged and is redelivered after the restart
(e.g. the reid gallery: :func:`store_errors`)
a sink (history, live state) is unreachable      retry with exponential backoff (0.2 s doubling to 5 s) until it works or
                                                 the process stops; counted in ``errors{reason=<sink>}``, readiness false
a sink rejects the record itself                 dead letter (reason ``sink``): retrying cannot help
(:func:`rejected_errors`: bad value, constraint)
==============================================  =====================================================

Example:
    >>> classify_stage_error(UnknownCamera("x"), "stop")
    ('dead_letter', 'unknown_camera')
    >>> classify_stage_error(WrongMessageType("x"), "stop")
    ('dead_letter', 'message_type')
    >>> classify_stage_error(RuntimeError("model"), "dead_letter")
    ('dead_letter', 'process')
    >>> classify_stage_error(RuntimeError("model"), "stop")
    ('stop', 'process')
    >>> b = Backoff(); [b.next_delay() for _ in range(7)]
    [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]

A shared backend that may hang (Redis: the API's live state, the sign-in limiter) sits behind a :class:`Breaker`:
after a failure its callers do without it for a while instead of each waiting for its timeout.
"""
from __future__ import annotations

import functools
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable, Literal

from storelens.errors import DecodeError, StorageError, WrongMessageType
from storelens.stages.base import UnknownCamera

Verdict = Literal["dead_letter", "stop"]

#: First and longest wait between two attempts of a failing sink.
FIRST_RETRY_DELAY_S = 0.2
MAX_RETRY_DELAY_S = 5.0


@functools.cache
def store_errors() -> tuple[type[BaseException], ...]:
    """Errors of a store that is unreachable or failing (imported on first use: no driver at start-up)."""
    errs: tuple[type[BaseException], ...] = (StorageError, sqlite3.Error)
    try:
        import psycopg

        errs += (psycopg.Error,)
    except ImportError:  # pragma: no cover (psycopg is a dependency)
        pass
    try:
        import sqlalchemy.exc

        errs += (sqlalchemy.exc.SQLAlchemyError,)
    except ImportError:  # pragma: no cover
        pass
    return errs


@functools.cache
def rejected_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning "this record cannot be stored" (retrying cannot help), not "the database is down"."""
    errs: tuple[type[BaseException], ...] = (ValueError, TypeError, OverflowError, sqlite3.IntegrityError,
                                             sqlite3.DataError)
    try:
        import psycopg

        errs += (psycopg.DataError, psycopg.IntegrityError)
    except ImportError:  # pragma: no cover
        pass
    try:
        import sqlalchemy.exc

        errs += (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.DataError)
    except ImportError:  # pragma: no cover
        pass
    return errs


def classify_stage_error(exc: BaseException, on_error: Verdict) -> tuple[Verdict, str]:
    """``(verdict, reason)`` for an exception raised while decoding or processing one message."""
    if isinstance(exc, UnknownCamera):
        return "dead_letter", "unknown_camera"
    if isinstance(exc, WrongMessageType):
        return "dead_letter", "message_type"
    if isinstance(exc, DecodeError):
        return "dead_letter", "decode"
    if isinstance(exc, store_errors()):
        return "stop", "store"
    return on_error, "process"


@dataclass
class Backoff:
    """Exponential backoff: 0.2 s, doubling, at most 5 s."""

    first_s: float = FIRST_RETRY_DELAY_S
    max_s: float = MAX_RETRY_DELAY_S
    _next: float = 0.0

    def next_delay(self) -> float:
        self._next = self.first_s if not self._next else min(self._next * 2, self.max_s)
        return self._next


class Breaker:
    """A circuit breaker of a backend that may hang: after a failure the backend is skipped for ``retry_s``
    (the callers answer without it at once), then one call tries it again while the others keep skipping it.

    Thread-safe. A caller asks :meth:`allow` before using the backend, then reports :meth:`failed` or
    :meth:`succeeded`; both return whether the state changed (to log an outage once, and its end).

    Example:
        >>> now = [0.0]
        >>> b = Breaker(30.0, clock=lambda: now[0])
        >>> b.allow(), b.failed(), b.failed(), b.down
        (True, True, False, True)
        >>> now[0] = 10.0; b.allow()  # skipped for 30 s
        False
        >>> now[0] = 31.0; b.allow(), b.allow()  # one call tries it again, the others still skip it
        (True, False)
        >>> b.succeeded(), b.down, b.allow()
        (True, False, True)
    """

    def __init__(self, retry_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_s = retry_s
        self._clock = clock
        self._down = False  # the backend failed last time
        self._retry_at = 0.0  # clock() before which the failed backend is not asked
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Breaker(retry_s={self.retry_s}, down={self._down})"

    @property
    def down(self) -> bool:
        """Whether the backend failed the last time it was asked."""
        return self._down

    def allow(self) -> bool:
        """Whether to ask the backend now: it works, or it failed ``retry_s`` ago and this call tries it again."""
        now = self._clock()
        with self._lock:
            if now < self._retry_at:
                return False
            if self._down:  # this call tries it; the others keep skipping it meanwhile
                self._retry_at = now + self.retry_s
            return True

    def failed(self) -> bool:
        """The backend failed: skip it for ``retry_s``. ``True`` if it worked until now (an outage begins)."""
        with self._lock:
            self._retry_at = self._clock() + self.retry_s
            began, self._down = not self._down, True
        return began

    def succeeded(self) -> bool:
        """The backend answered. ``True`` if it had failed (the outage is over)."""
        with self._lock:
            ended, self._down, self._retry_at = self._down, False, 0.0
        return ended
