"""What every StoreLens service process shares: settings, health, metrics, shutdown.

* ``/healthz``: the process is alive and its loop is turning (heartbeat
  younger than ``stall_s``; until the first beat, ``start_s`` counted from the process' start or from the
  end of a wait (:func:`waiting`), whose loop beats it meanwhile).
* ``/startupz``: the service has started: its loop has beaten once (:meth:`ServiceRuntime.beat`),
  which the services do only once their models are loaded and their stage is built, or it waits
  (:func:`waiting`, e.g. for the schema: for as long as someone takes to run ``storelens db upgrade``,
  which no startup probe's budget covers; ``/healthz``, beaten by the wait, is the liveness then).
  Kubernetes' startup probe, which holds the liveness probe back until then.
* ``/readyz``: every readiness check passes (broker connected, model
  loaded, state recovered, ...); each check is a named callable returning a bool, or
  ``(ok, detail)``: the detail of a failing check is answered under ``details`` (e.g. ingest's
  ``cameras``: which camera and why). What the process waits for before it can work
  (:func:`waiting`, e.g. ``schema``: the tables' revision with ``storage.migrate: wait``) is a failing
  check too, while ``/healthz`` stays up (the wait loop beats it).
* ``/metrics``: Prometheus text format, from the service's own registry.
* SIGTERM/SIGINT set :attr:`ServiceRuntime.stopping`; the run loop then
  flushes its producer and commits its consumer before exiting.

Example:
    >>> rt = ServiceRuntime("ingest", port=0)          # doctest: +SKIP
    >>> rt.add_check("broker", lambda: consumer.connected)  # doctest: +SKIP
    >>> rt.start()                                      # doctest: +SKIP
    >>> while not rt.stopping.is_set(): rt.beat(); ...  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from storelens.errors import ConfigError

log = logging.getLogger(__name__)


#: What this process waits for before it can work, by name -> detail (:func:`waiting`): a failing readiness
#: check of every :class:`ServiceRuntime` of the process.
WAITS: dict[str, str] = {}
_wait_beat = [float("-inf")]
#: Set by SIGTERM/SIGINT of a started :class:`ServiceRuntime`: a wait (:func:`waiting`) ends.
STOP = threading.Event()


def http_port_from_env() -> int:
    """``$STORELENS_HTTP_PORT`` (default 9100), the port of ``/healthz``, ``/readyz`` and ``/metrics``; a value that
    is no port number is a :class:`~storelens.errors.ConfigError` naming the variable."""
    return int(port_from_env("STORELENS_HTTP_PORT", 9100))  # type: ignore[arg-type]


def port_from_env(name: str, default: int | None = None) -> int | None:
    """The port number of ``$name`` (``default`` when unset or empty); a value that is no port number is a
    :class:`~storelens.errors.ConfigError` naming the variable."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}={raw!r} is not a port number (0 to 65535)")
    return port


def waiting(name: str, detail: str) -> None:
    """The process waits for ``name`` (``detail``: what for, answered by ``/readyz``); each call is also a
    heartbeat of ``/healthz`` (call it at least every ``stall_s``): the loop that waits is turning."""
    WAITS[name] = detail
    _wait_beat[0] = time.monotonic()


def done_waiting(name: str) -> None:
    """The wait for ``name`` is over: ``/healthz`` gives the rest of the start ``start_s`` from now."""
    WAITS.pop(name, None)
    _wait_beat[0] = time.monotonic()


class ServiceMetrics:
    """The counters every service exports (label ``service`` is fixed per process)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages_in = Counter("storelens_messages_in_total", "Messages consumed", ["topic"], registry=registry)
        self.messages_out = Counter("storelens_messages_out_total", "Messages produced (handed to the producer; "
                                    "those whose delivery failed are in storelens_delivery_errors_total)", ["topic"],
                                    registry=registry)
        self.delivery_errors = Counter("storelens_delivery_errors_total", "Messages the broker did not take (delivery "
                                       "failed after the producer's retries)", ["topic"], registry=registry)
        self.errors = Counter("storelens_errors_total", "Processing errors", ["reason"], registry=registry)
        self.dead_letters = Counter("storelens_dead_letters_total", "Messages sent to the dead-letter topic",
                                    ["topic"], registry=registry)
        self.duplicates = Counter("storelens_duplicates_total", "Redelivered messages skipped", ["topic"],
                                  registry=registry)
        self.lag = Gauge("storelens_consumer_lag", "Messages behind the high watermark, of the partitions the "
                         "consumer owns (set once it has read from them)", ["topic", "partition"],
                         registry=registry)
        self.seconds = Histogram("storelens_processing_seconds", "Time to process one message", ["topic"],
                                 registry=registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.batch_size = Histogram("storelens_batch_size", "Messages handed to the stage in one call (batching "
                                    "runners only: detect-track in the embedded mode)", ["topic"], registry=registry,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
        self.purged = Counter("storelens_privacy_purged_rows_total", "Rows of personal data deleted by the "
                              "retention purge (privacy.retention), by kind", ["kind"], registry=registry)
        self.webhook_dropped = Counter("storelens_webhook_dropped_total", "Alert webhook messages dropped (dead-"
                                       "lettered) because alerts.webhook_max_queued were waiting for their URL",
                                       registry=registry)
        self.webhook_dead_lettered = Counter(
            "storelens_webhook_dead_lettered_total", "Alert webhook messages given up, by reason: rejected (a 4xx "
            "answer), max_attempts, max_age (alerts.webhooks[].max_age_s), queue_full, closed (in-memory sender at "
            "a stop), internal", ["reason"], registry=registry)
        self.webhook_backlog = Gauge("storelens_webhook_backlog", "Alert webhook messages waiting for delivery (in "
                                     "the history's webhook_outbox)", registry=registry)

    def drop_lag(self, topic: str, partition: int) -> None:
        """Remove the lag gauge's series of a partition the consumer no longer owns (revoked): a stale value
        would stay exported for ever."""
        self.lag.remove(topic, str(partition))


class ServiceRuntime:
    def __init__(self, name: str, port: int | None = None, host: str | None = None, stall_s: float = 120.0,
                 serve_metrics: bool = True, start_s: float | None = None) -> None:
        self.name = name
        #: how long the start may take before the first :meth:`beat` (default ``stall_s``): after a wait
        #: (:func:`waiting`), the startup probe passed during it no longer holds the liveness probe back
        self.start_s = stall_s if start_s is None else start_s
        #: ``False``: ``/metrics`` answers 404 (the api's port while it waits for the schema: there the app serves
        #: it, behind the metrics token)
        self.serve_metrics = serve_metrics
        #: where the port comes from, named by the error of a port that cannot be served (:meth:`start`)
        self._port_from = "STORELENS_HTTP_PORT" if port is None else None
        self.port = http_port_from_env() if port is None else int(port)
        self.host = host or os.environ.get("STORELENS_HTTP_HOST", "0.0.0.0")
        self.registry = CollectorRegistry()
        self.metrics = ServiceMetrics(self.registry)
        self.stopping = threading.Event()
        self._checks: dict[str, Callable[[], bool]] = {}
        self._beat = time.monotonic()
        self._started = False
        self.stall_s = stall_s
        self._server: ThreadingHTTPServer | None = None

    def add_check(self, name: str, check: Callable[[], bool]) -> None:
        self._checks[name] = check

    def beat(self) -> None:
        self._beat = time.monotonic()
        self._started = True

    def startup(self) -> tuple[bool, dict]:
        """Started: :meth:`beat` was called once (the service's loop runs), or the process waits (:func:`waiting`,
        e.g. for ``storelens db upgrade``: open-ended, so the liveness probe, fed by the wait, takes over). Before
        that ``/healthz`` passes on the heartbeat of the process' start, while the models may still be loading."""
        if self._started:
            return True, {"status": "started"}
        if WAITS:
            return True, {"status": "waiting", "waiting": sorted(WAITS)}
        return False, {"status": "starting"}

    def health(self) -> tuple[bool, dict]:
        age = time.monotonic() - max(self._beat, _wait_beat[0])
        limit = self.stall_s if self._started or WAITS else self.start_s
        return age < limit, {"status": "ok" if age < limit else "stalled", "heartbeat_age_s": round(age, 1)}

    def readiness(self) -> tuple[bool, dict]:
        results, details = {}, {}
        for name, check in self._checks.items():
            try:
                got = check()
                results[name] = bool(got[0] if isinstance(got, tuple) else got)
                if isinstance(got, tuple) and not results[name] and got[1]:
                    details[name] = got[1]
            except Exception as exc:  # a failing check means not ready, never a crash
                results[name] = False
                log.debug("readiness check failed", extra={"check": name, "error": str(exc)})
        for name, detail in list(WAITS.items()):
            results[name] = False
            details[name] = detail
        ok = all(results.values()) and not self.stopping.is_set()
        doc = {"status": "ready" if ok else "not ready", "checks": results}
        if details:
            doc["details"] = details
        return ok, doc

    def start(self) -> None:
        """Serve /healthz, /readyz, /startupz, /metrics in a thread and install signal handlers."""
        rt = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == "/metrics" and rt.serve_metrics:
                    body, ctype, code = generate_latest(rt.registry), CONTENT_TYPE_LATEST, 200
                elif path in ("/healthz", "/readyz", "/startupz"):
                    ok, doc = {"/healthz": rt.health, "/readyz": rt.readiness, "/startupz": rt.startup}[path]()
                    body, ctype, code = json.dumps({"service": rt.name, **doc}).encode(), "application/json", 200 if ok else 503
                else:
                    body, ctype, code = b'{"detail": "not found"}', "application/json", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # quiet: probes hit this every few seconds
                return

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:  # a port taken (two services on one host), a host that is no address of this one
            hint = (f"; set {self._port_from} (and STORELENS_HTTP_HOST) to a free port of this host"
                    if self._port_from else "")
            raise ConfigError(f"{self.name}: cannot serve /healthz, /readyz and /metrics on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}{hint}") from None
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="http", daemon=True).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        log.info("service started", extra={"service": self.name, "http_port": self.port})

    def _on_signal(self, signum, _frame) -> None:
        log.info("stopping", extra={"service": self.name, "signal": signal.Signals(signum).name})
        self.stopping.set()
        STOP.set()

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
