"""Prometheus metrics of the API: a per-app registry and the middleware that fills it."""
from __future__ import annotations

import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


#: A ping of the live state (``/readyz``, ``/metrics``) waits this many times ``live.timeout_s``, the socket timeout
#: of the live state's own client: a ping that must connect again (a dropped pooled connection) takes up to one
#: timeout to connect and one to answer, and waiting just one would report a Redis that works as unavailable.
LIVE_PING_TIMEOUTS = 2


class Metrics:
    """Per-app registry, so several apps can live in one process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "storelens_http_requests", "HTTP requests by route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "storelens_http_request_duration_seconds", "HTTP request latency by route template.",
            ["method", "route"], registry=self.registry,
        )
        self.rate_limit_fallbacks = Counter(
            "storelens_rate_limit_fallbacks", "Sign-in and audit rate-limit checks made in the process's memory "
            "because the shared store (Redis, live.redis_url) failed.", registry=self.registry,
        )
        #: Writes not audited (:class:`~storelens.api.security.AuditMiddleware`): over the per-minute cap of a client's
        #: anonymous writes (``anonymous``) or of a signed-in principal's refused ones (``refused``).
        self.audit_dropped = Counter(
            "storelens_audit_rows_dropped_total", "Writes not audited: over the per-minute cap of anonymous writes "
            "per client or of refused writes (4xx) per signed-in principal, by reason", ["reason"],
            registry=self.registry,
        )
        #: Rows the API process's retention purge deleted (:func:`storelens.runtime.retention.api_retention`).
        self.purged = Counter(
            "storelens_privacy_purged_rows_total", "Rows of personal data deleted by the retention purge "
            "(privacy.retention), by kind", ["kind"], registry=self.registry,
        )
        #: Errors of the API process by reason (:meth:`count_error`): ``breaker_probe_not_started`` (a Redis
        #: breaker's probe thread could not be started); requests refused for a reason worth watching:
        #: ``body_too_large`` (over ``api.max_body_bytes``, 413), ``data_error`` (a value the database refused, 422: a
        #: free-text parameter without its validation), ``password_checks_busy`` (a sign-in that found no free
        #: password check, 429: ``auth.max_concurrent_password_checks``); ``live_read_failed`` (a read of
        #: ``/v1/live``'s numbers); ``forwarded_for_not_trusted`` (``X-Forwarded-For`` from a peer outside
        #: ``api.forwarded_allow_ips``: ignored); ``site_refresh_failed`` (``GET /v1/site``'s look for a newer site
        #: version: the version in force answered); ``sign_out_failed`` (the sessions could not be ended, 503).
        self.errors = Counter(
            "storelens_errors_total", "Errors of the API process by reason (breaker_probe_not_started, "
            "body_too_large, data_error, password_checks_busy, live_read_failed, forwarded_for_not_trusted, "
            "site_refresh_failed, sign_out_failed)",
            ["reason"], registry=self.registry,
        )
        self._live_ping: Callable[[], bool] | None = None  # the live state's (watch_live_state)
        self._live_wait_s = 0.0

    def watch_live_state(self, ping: Callable[[], bool], timeout_s: float) -> None:
        """Export ``storelens_live_state_up``: whether the live state (Redis) answers ``ping`` within
        :attr:`live_wait_s` (:data:`LIVE_PING_TIMEOUTS` times ``timeout_s``, ``live.timeout_s``: the socket timeout
        of its client) at each scrape; :meth:`live_state_up` is that check, also ``/readyz``'s ``live_state``
        (which does not decide readiness: see :mod:`storelens.api.routes.health`)."""
        self._live_ping, self._live_wait_s = ping, LIVE_PING_TIMEOUTS * timeout_s
        Gauge("storelens_live_state_up", "1 when the live state (Redis, live.redis_url: live occupancy, the "
              "shared sign-in limit) answers a ping at scrape time, else 0; the API stays ready without it.",
              registry=self.registry).set_function(lambda: 1.0 if self.live_state_up() else 0.0)

    def count_error(self, reason: str) -> None:
        """One more ``storelens_errors_total{reason}``."""
        self.errors.labels(reason).inc()

    @property
    def live_wait_s(self) -> float:
        """The longest a ping of the live state is waited for (see :meth:`watch_live_state`)."""
        return self._live_wait_s

    def live_state_up(self) -> bool:
        """Whether the live state of :meth:`watch_live_state` answers its ping within its wait (blocking, at most
        that long: :func:`answers_within`); ``False`` without a live state."""
        return self._live_ping is not None and answers_within(self._live_ping, self._live_wait_s)


def answers(ping: Callable[[], bool]) -> bool:
    """``ping()``, a broken backend (an exception) counting as not answering (never a 500)."""
    try:
        return bool(ping())
    except Exception:
        return False


def answers_within(ping: Callable[[], bool], wait_s: float) -> bool:
    """:func:`answers`, ``False`` when ``ping`` takes more than ``wait_s`` (it goes on alone in a daemon thread
    until its own timeout: a hung backend never holds the caller longer). The one bound of every ping of the live
    state (``/readyz``, ``/metrics``: :meth:`Metrics.live_state_up`)."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(answers(ping)), name="ping", daemon=True)
    thread.start()
    thread.join(wait_s)
    return bool(result and result[0])


class StatusRecorder:
    """An ASGI ``send`` that passes messages on and remembers the response's status (500 until it starts)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class MetricsMiddleware:
    """Counts every HTTP request under its route template (``/v1/occupancy/{camera_id}``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorder = StatusRecorder(send)
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, recorder)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label value: raw paths would explode the series count.
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(recorder.status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - t0)

