"""Serving a site's API from its site file, in one process or in ``api.workers`` uvicorn worker processes.

One Python process serves HTTP on one core at most (the GIL); on a box with several cores,
``api.workers: N`` runs N uvicorn worker processes on the same port, each with its own
app, storage connection and caches (:func:`app_from_env` is uvicorn's factory). Sessions
stay valid across workers when ``$STORELENS_JWT_SECRET`` is set (else each worker signs with
its own random key and a token works only on the worker that issued it: :func:`serve_site`
refuses that).

Example (not run: it serves until SIGTERM):
    >>> serve_site("site.yaml", host="127.0.0.1", port=8080, workers=2)  # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from storelens.config import SiteConfig, load_config
from storelens.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI

#: The site file that :func:`app_from_env` reads.
CONFIG_ENV = "STORELENS_CONFIG"
#: The GIL switch interval of a serving process (Python's default: 5 ms). The routes run in a thread
#: pool; while one computes, the event loop thread waits up to the interval for the GIL after each
#: socket call, so every other connection of the process stalls ("convoy effect"). A shorter interval
#: lets the loop answer the cached reads between the slices of a computation.
SWITCH_INTERVAL_S = float(os.environ.get("STORELENS_API_SWITCH_INTERVAL_S", "0.0005"))


#: After the live state (Redis) failed, reads answer from storage at once and ``live_state`` is ``unavailable``
#: until a ping in the background answers: the first ping this long after the failure, then twice as long after
#: each failed one, up to :data:`LIVE_RETRY_S` (no read ever waits for a Redis that failed; figures are live again
#: within seconds of its recovery). Each read waits at most ``live.timeout_s`` (the client's socket timeout), a ping of
#: ``/readyz`` and ``/metrics`` twice that (:data:`~storelens.api.metrics.LIVE_PING_TIMEOUTS`: a reconnect, then
#: the answer).
LIVE_FIRST_RETRY_S = 1.0
LIVE_RETRY_S = 5.0


def _tune_process() -> None:
    import sys

    sys.setswitchinterval(SWITCH_INTERVAL_S)


def _open_galleries(config: SiteConfig, storage) -> tuple:
    """``(gallery_store, purge_gallery)`` of the app (either may be ``None``; the same store when the app serves
    the gallery): the face gallery the API serves (:func:`storelens.storage.upgrade.site_stores`: PostgreSQL, or
    ``faces.enabled``), else the SQLite gallery an earlier run left, opened only for the retention purge. What
    :func:`build_app` opens and :func:`wait_for_schema` waits for."""
    from storelens.storage import open_gallery_store
    from storelens.storage.gallery import open_gallery_store_to_purge
    from storelens.storage.upgrade import site_stores

    gallery = next((s for s in site_stores(config) if s.chain == "gallery"), None)
    if gallery is None:
        return None, None
    if gallery.purge_only:
        return None, open_gallery_store_to_purge(config, storage)
    store = open_gallery_store(config)
    return store, store


def build_app(config: SiteConfig) -> "FastAPI":
    """The app of ``config`` with its storage, live state (``live.redis_url``), gallery (faces), publishers
    (:func:`api_publishers`) and retention purge (:func:`storelens.runtime.retention.api_retention`: a SQLite
    history no embedded pipeline runs on); they are closed when the app shuts down."""
    from storelens.runtime.retention import api_retention
    from storelens.storage import open_storage

    from .app import create_app

    storage = open_storage(config.storage)
    closers = [storage.close]
    live = None
    try:
        if config.live.redis_url:
            from storelens.storage.live import RedisLiveState

            live = RedisLiveState(config.live.redis_url, timeout_s=config.live.timeout_s, retry_s=LIVE_RETRY_S,
                                  first_retry_s=LIVE_FIRST_RETRY_S)
            closers.append(live.close)
        gallery_store, purge_gallery = _open_galleries(config, storage)
        closers.extend(g.close for g in {id(g): g for g in (gallery_store, purge_gallery) if g is not None}.values())
        purge = api_retention(config, storage, purge_gallery)
        hooks = api_publishers(config, storage)
    except BaseException:
        for close in reversed(closers):
            close()
        raise
    app = create_app(config, storage, live, gallery_store=gallery_store, chores=[purge] if purge else [], **hooks)
    for close in [*(h.close for h in hooks.values()), *closers]:  # the publishers deliver before the stores close
        app.router.on_shutdown.append(close)
    return app


def api_publishers(config: SiteConfig, storage) -> dict:
    """The hooks of :func:`~storelens.api.app.create_app` that publish what the API changes, by mode.

    Distributed (``storage.backend: postgres``): erasures on ``customer-erasures``, site versions on
    ``site-config``, sales on ``pos-transactions`` (Kafka). Embedded (SQLite): the erasures, through the
    history's outbox (:class:`~storelens.storage.outbox.HistoryOutbox`), which the embedded pipeline relays
    onto its in-process ``customer-erasures`` (it reads the site versions from the history itself).
    """
    from storelens.runtime.workers import CustomerErasurePublisher, PosTransactionPublisher, SiteConfigPublisher

    if config.storage.backend == "postgres":  # each connects on first use
        return {"on_erasure": CustomerErasurePublisher(config), "on_site_change": SiteConfigPublisher(config),
                "on_transactions": PosTransactionPublisher(config)}
    from storelens.storage.outbox import HistoryOutbox

    return {"on_erasure": CustomerErasurePublisher(config, bus=HistoryOutbox(storage))}


def _check_port_free(host: str, port: int, port_from: str) -> None:
    """Whether the API can listen on ``host:port``, bound as uvicorn binds (``SO_REUSEADDR``): else a
    :class:`ConfigError` naming ``port_from`` (uvicorn would log the error and exit 3)."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except (OSError, UnicodeError) as exc:
            hint = (f"set {port_from} to a free port of this host" if getattr(exc, "errno", None) == errno.EADDRINUSE
                    else "check STORELENS_API_HOST (or api.host)")
            raise ConfigError(f"api: cannot serve on {host}:{port}: {getattr(exc, 'strerror', None) or exc}; "
                              f"{hint}") from None


def app_from_env() -> "FastAPI":
    """uvicorn's factory (``storelens.api.server:app_from_env``): the app of the site file ``$STORELENS_CONFIG``."""
    import logging

    if not logging.getLogger().handlers:  # a fresh worker process: JSON logs, as the supervisor's
        from storelens.logs import setup_logging

        setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))
    _tune_process()
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"${CONFIG_ENV} must name the site file")
    app = build_app(load_config(path))
    _end_streams_on_signal(app)
    return app


def _end_streams_on_signal(app: "FastAPI") -> None:
    """In a worker process (uvicorn calls the factory on its event loop, its SIGTERM/SIGINT handlers installed): the
    signal also ends the open ``/v1/live`` streams, as :func:`storelens.api.app.serve` does; else uvicorn waits for
    them (they never end) for ``SHUTDOWN_GRACE_S`` and then cancels them."""
    import asyncio
    import signal
    import threading

    from .routes.live import end_streams

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not called by uvicorn's worker (a test, a script): no server to stop
        return
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous) -> None:
            previous(signum, frame)  # uvicorn's: the server stops accepting and waits for the responses
            loop.call_soon_threadsafe(end_streams, app)  # on the app's loop, not inside the interrupted code

        signal.signal(sig, handler)


def wait_for_schema(config: SiteConfig, host: str, port: int) -> None:
    """``storage.migrate: wait``: until the stores the app opens have their tables at this release's revision
    (:func:`storelens.storage.base.open_migrated`), serve ``/healthz`` (up) and ``/readyz`` (503, naming the
    revision waited for) on the API's port, so that a startup probe does not end the wait."""
    import signal

    from storelens.runtime.service import ServiceRuntime
    from storelens.storage import open_storage

    # no /metrics while waiting: the app serves it (with the metrics token) once it runs
    rt = ServiceRuntime("api", port=port, host=host, serve_metrics=False)
    rt.start()
    try:
        storage = open_storage(config.storage)
        try:
            for gallery in {id(g): g for g in _open_galleries(config, storage) if g is not None}.values():
                gallery.close()  # the stores build_app opens (_open_galleries), each at head once open
        finally:
            storage.close()
    finally:
        rt.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # the server's own from here
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)


def serve_site(config_path: str, host: str | None = None, port: int | None = None,
               workers: int | None = None, port_from: str = "api.port") -> int:
    """Serve the API of the site file ``config_path`` until SIGTERM/SIGINT; the exit code.

    ``host``, ``port`` and ``workers`` default to the file's ``api`` section. With one worker the
    app runs in this process (:func:`storelens.api.app.serve`); with more, uvicorn's supervisor
    starts that many worker processes, each building the app with :func:`app_from_env`. A port that cannot be
    served (taken) is a :class:`ConfigError` naming ``port_from`` (where ``port`` came from).
    """
    config = load_config(config_path)
    host = host or config.api.host
    port = config.api.port if port is None else port
    workers = workers or config.api.workers
    if config.storage.migrate == "wait":
        from storelens.runtime import service
        from storelens.errors import WaitStopped

        try:
            wait_for_schema(config, host, port)
        except WaitStopped:  # SIGTERM while waiting: nothing to stop yet
            return 0
        if service.STOP.is_set():  # SIGTERM during the last (successful) look
            return 0
    _check_port_free(host, port, port_from)
    if workers <= 1:
        from .app import serve

        _tune_process()
        app = build_app(config)
        serve(app, host, port)
        return 0
    secret_env = config.auth.jwt_secret_env
    if not os.environ.get(secret_env):
        raise ConfigError(f"api.workers: {workers} needs a shared session signing key in ${secret_env} "
                          "(each worker would sign with its own)")
    import uvicorn

    from .app import SHUTDOWN_GRACE_S, warn_forwarded_any

    warn_forwarded_any(config.api.forwarded_allow_ips)
    os.environ[CONFIG_ENV] = str(config_path)
    uvicorn.run("storelens.api.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", log_config=None, proxy_headers=True,
                forwarded_allow_ips=config.api.forwarded_allow_ips,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S)  # (each worker ends its live streams at the signal)
    return 0
