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
after a failure its callers do without it instead of each waiting for its timeout, while a probe in the background
finds out when it answers again.
"""
from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable, Literal

from storelens.errors import DecodeError, StorageError, WrongMessageType
from storelens.stages.base import UnknownCamera

log = logging.getLogger(__name__)
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


#: ``storelens_errors_total`` reason of a :class:`Breaker` probe whose thread could not be started.
PROBE_NOT_STARTED = "breaker_probe_not_started"


class Breaker:
    """A circuit breaker of a backend that may hang: after a failure the backend is skipped (the callers answer
    without it at once) for a cool-down of ``first_retry_s``, doubling with each failure in a row up to
    ``retry_s``, then tried again, at most one try at a time.

    With ``probe`` (a cheap call, e.g. a ping) the try is the probe's, in a thread of its own: no caller ever waits
    for a backend that failed, they keep skipping it until the probe answers (the backend is used again at once).
    Without it the first caller after the cool-down tries the backend itself. The failures in a row (and so the
    cool-down) count until a real call :meth:`succeeded`, not a probe: a backend that answers its ping but fails
    its calls (a slow or partitioned Redis) is tried ever less often, its outage reported once.

    Thread-safe. A caller asks :meth:`allow` before using the backend, then reports :meth:`failed` or
    :meth:`succeeded`; both return whether the state changed (to log an outage once, and its end).

    The probe's thread comes from ``thread_factory`` (``threading.Thread``'s arguments). One that cannot be started
    (``RuntimeError`` from ``start``: the process' thread limit, the interpreter shutting down) is a failed probe:
    logged, counted with ``count_error(PROBE_NOT_STARTED)`` (the service's ``storelens_errors_total{reason}``;
    :attr:`count_error` may be set after the breaker is made), and the next one is started after the next
    cool-down; the callers meanwhile skip the backend as before.

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

        A short first cool-down growing with the failures in a row (1, 2, 4, 5, 5 s), back to the first after a
        success:

        >>> b, cooldowns_s = Breaker(5.0, first_retry_s=1.0, clock=lambda: now[0]), []
        >>> for _ in range(5):
        ...     now[0] += 10.0; _ = b.allow(), b.failed()
        ...     cooldowns_s.append(b.cooldown_s)
        >>> cooldowns_s
        [1.0, 2.0, 4.0, 5.0, 5.0]
        >>> b.failed(), b.cooldown_s  # a call begun before the last try failed too: the same failure
        (False, 5.0)
        >>> b.succeeded(), b.failed(), b.cooldown_s
        (True, True, 1.0)
    """

    def __init__(self, retry_s: float, *, first_retry_s: float | None = None,
                 probe: Callable[[], object] | None = None, name: str = "backend",
                 clock: Callable[[], float] = time.monotonic,
                 thread_factory: Callable[..., threading.Thread] = threading.Thread,
                 count_error: Callable[[str], object] | None = None) -> None:
        if retry_s <= 0 or (first_retry_s is not None and not 0 < first_retry_s <= retry_s):
            raise ValueError(f"Breaker: retry_s ({retry_s}) and first_retry_s ({first_retry_s}) must be > 0, "
                             "first_retry_s at most retry_s")
        self.retry_s = retry_s
        self.first_retry_s = retry_s if first_retry_s is None else first_retry_s
        self.name = name
        self._probe = probe
        self._clock = clock
        self._thread_factory = thread_factory
        #: Called with an error's reason (``storelens_errors_total{reason}``): a probe that could not start.
        self.count_error = count_error
        self._down = False  # the backend failed last time
        self._failures = 0  # failures in a row
        self._retry_at = 0.0  # clock() before which the failed backend is not asked
        self._probing = False  # the probe is under way
        self._trying = False  # a caller tries the failed backend (no probe)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Breaker({self.name!r}, retry_s={self.retry_s}, down={self._down})"

    @property
    def down(self) -> bool:
        """Whether the backend failed the last time it was asked."""
        return self._down

    @property
    def cooldown_s(self) -> float:
        """The cool-down after the current failures in a row: ``first_retry_s`` doubling, at most ``retry_s``."""
        return min(self.first_retry_s * 2 ** max(self._failures - 1, 0), self.retry_s)

    def allow(self) -> bool:
        """Whether to ask the backend now: it works, or (without a ``probe``) its cool-down is over and this call
        tries it again. With a ``probe``, a failed backend is never the caller's: the cool-down's end starts the
        probe (one at a time) and the call answers ``False``."""
        now = self._clock()
        with self._lock:
            if not self._down:
                return True
            if now < self._retry_at or self._probing:
                return False
            if self._probe is None:  # this call tries it; the others keep skipping it meanwhile
                self._retry_at, self._trying = now + self.cooldown_s, True
                return True
            self._probing = True
        try:
            self._thread_factory(target=self._run_probe, name=f"probe-{self.name}", daemon=True).start()
        except Exception as exc:  # e.g. no thread left: a failed probe, another one after the next cool-down
            log.warning("%s: cannot start its probe (%s): tried again after %g s", self.name, exc,
                        self._probe_failed(), extra={"reason": PROBE_NOT_STARTED})
            if self.count_error is not None:
                self.count_error(PROBE_NOT_STARTED)
        return False

    def _run_probe(self) -> None:
        try:
            ok = bool(self._probe())  # type: ignore[misc]
        except Exception as exc:  # the backend still fails
            log.debug("%s: probe failed: %s", self.name, exc)
            ok = False
        if not ok:
            self._probe_failed()
            return
        with self._lock:  # used again; the failures in a row count until a real call succeeds (see the class)
            self._probing, self._down, self._retry_at, self._trying = False, False, 0.0, False
        log.info("%s answers its probe: used again", self.name)

    def _probe_failed(self) -> float:
        """The probe failed or could not start: the next one after a longer cool-down (returned)."""
        with self._lock:
            self._probing = False
            self._failed_locked()
            return self.cooldown_s

    def _failed_locked(self) -> None:
        self._failures += 1
        self._retry_at = self._clock() + self.cooldown_s
        self._down, self._trying = True, False

    def failed(self) -> bool:
        """The backend failed: skip it for the next cool-down. ``True`` if it worked until now (an outage
        begins; not after only a probe answered: the same outage); a call that began before the backend was known
        to fail changes nothing (``False``)."""
        with self._lock:
            if self._down and not self._trying:
                return False
            began = self._failures == 0
            self._failed_locked()
        return began

    def succeeded(self) -> bool:
        """The backend answered a real call. ``True`` if it had failed (the outage is over)."""
        with self._lock:
            ended = self._down or self._failures > 0
            self._down, self._retry_at, self._failures, self._trying = False, 0.0, 0, False
        return ended
