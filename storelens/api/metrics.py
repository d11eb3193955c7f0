"""Prometheus metrics of the API: a per-app registry and the middleware that fills it."""
from __future__ import annotations

import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: How long ``/readyz`` and a ``/metrics`` scrape wait for the live state's ping (its client may wait its socket
#: timeout for a Redis that does not answer, longer than the probe's timeout); past it the live state is reported
#: unavailable.
LIVE_PING_WAIT_S = 1.0


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
        #: Rows the API process's retention purge deleted (:func:`storelens.runtime.retention.api_retention`).
        self.purged = Counter(
            "storelens_privacy_purged_rows_total", "Rows of personal data deleted by the retention purge "
            "(privacy.retention), by kind", ["kind"], registry=self.registry,
        )

    def watch_live_state(self, ping: Callable[[], bool]) -> None:
        """Export ``storelens_live_state_up``: whether the live state (Redis) answers ``ping`` within
        :data:`LIVE_PING_WAIT_S` at each scrape (``/readyz`` does not wait for it: see
        :mod:`storelens.api.routes.health`)."""
        Gauge("storelens_live_state_up", "1 when the live state (Redis, live.redis_url: live occupancy, the "
              "shared sign-in limit) answers a ping at scrape time, else 0; the API stays ready without it.",
              registry=self.registry).set_function(lambda: 1.0 if answers_within(ping, LIVE_PING_WAIT_S) else 0.0)


def answers(ping: Callable[[], bool]) -> bool:
    """``ping()``, a broken backend (an exception) counting as not answering (never a 500)."""
    try:
        return bool(ping())
    except Exception:
        return False


def answers_within(ping: Callable[[], bool], wait_s: float) -> bool:
    """:func:`answers`, ``False`` when ``ping`` takes more than ``wait_s`` (it goes on alone in a daemon thread
    until its own timeout: a hung backend never holds the caller longer)."""
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

