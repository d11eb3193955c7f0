"""The app factory: :func:`create_app` wires the dependencies, middleware and routers; :func:`serve` runs it."""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import storelens
from storelens.config import SiteConfig
from storelens.config.site import site_file_override
from storelens.storage import Storage

from .dashboard import mount_dashboard
from .deps import ApiContext, LiveState
from .cache import CachedReadsMiddleware, cached_role
from .metrics import Metrics, MetricsMiddleware
from .models import HTTPErrorWithFields
from .security import AuditMiddleware, Authenticator, SameOriginWritesMiddleware
from .routes import ROUTERS

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the gallery (numpy, FAISS) is only imported where faces are enabled
    import uvicorn

    from storelens.storage import GalleryStore


def create_app(
    config: SiteConfig,
    storage: Storage,
    live: LiveState | None = None,
    gallery_store: GalleryStore | None = None,
    on_erasure: Callable[[str], object] | None = None,
    on_transactions: Callable[[list], object] | None = None,
    on_site_change: Callable[[object], object] | None = None,
    chores: Sequence[Any] = (),
) -> FastAPI:
    """The StoreLens API over ``storage`` for the cameras of ``config``.

    With ``live`` (e.g. :class:`~storelens.storage.live.RedisLiveState`, distributed
    mode), ``/v1/occupancy*`` read each camera's occupancy from the live state
    (falling back to ``storage`` when it has none or does not answer: :func:`~storelens.api.server.build_app`
    gives it a short timeout and a breaker, ``retry_s``) and report its ``last_seen_ts_ms``; ``/readyz`` then
    reports ``live.ping()`` (``live_state``) without requiring it (readiness is the storage's), and ``/metrics``
    has it as ``storelens_live_state_up``.

    ``gallery_store`` (a :class:`~storelens.storage.gallery.GalleryStore`)
    enables ``/v1/customers*``; without it they answer 503.
    ``/v1/demographics`` reads ``storage`` only. ``DELETE
    /v1/customers/{id}`` deletes the customer from the gallery store and
    ``storage``, then calls ``on_erasure(customer_id)`` if given (distributed
    mode: publish a ``CustomerErasure`` so the reid service drops the customer
    from its in-memory index).

    ``POST /v1/transactions`` stores the point-of-sale transactions in ``storage``, then
    calls ``on_transactions(transactions)`` with every transaction of the request (duplicates
    too: consumers are idempotent) if given (e.g. publish them to ``pos-transactions``).

    ``/v1/site`` edits cameras, lines and zones (admins); each saved version is stored, put in
    force in this app, and passed to ``on_site_change(update)`` (a ``SiteUpdate``; distributed
    mode: publish it to the compacted ``site-config`` topic). The embedded pipeline reads new
    versions from ``storage``. With ``on_site_change``, a chore (:class:`SiteRedelivery`) passes it the newest
    saved version again at the app's start and every :data:`SITE_REDELIVER_S` while it has not taken it (an edit
    whose publish failed answered 503).

    ``chores`` (e.g. the retention purge of :func:`storelens.runtime.retention.api_retention`) run in a thread of
    their own from the app's startup to its shutdown (:class:`~storelens.runtime.retention.ChoreThread`), their
    deleted rows counted in ``/metrics``.

    Every route but ``/healthz``, ``/readyz`` and the sign-in form needs credentials
    (:mod:`storelens.api.security`); the first admin comes from ``$STORELENS_ADMIN_PASSWORD``
    or ``storelens users create-admin``.

    Example:
        >>> from storelens.config import parse_config
        >>> from storelens.storage import SqliteStorage
        >>> cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
        >>> app = create_app(cfg, SqliteStorage(":memory:"))
        >>> app.title
        'StoreLens API'
    """
    app = FastAPI(
        title="StoreLens API",
        version=storelens.__version__,
        description="People counts, live occupancy, tracks and line crossings of a store's cameras; "
        "demographics of the faces seen and returning customers (pseudonymous ids, no images). "
        "Times are milliseconds since the Unix epoch; ranges are half-open [start_ms, end_ms).",
    )
    metrics = Metrics()
    if live is not None:
        metrics.watch_live_state(live.ping, config.live.timeout_s)  # storelens_live_state_up and /readyz's live_state
        if hasattr(live, "count_errors"):  # e.g. RedisLiveState: its breaker's probe that could not start
            live.count_errors(metrics.count_error)
    auth = Authenticator(config.auth, storage, redis_url=config.live.redis_url, metrics=metrics)
    auth.bootstrap_admin()
    context = ApiContext(config=config, storage=storage, metrics=metrics, auth=auth, live=live,
                         gallery_store=gallery_store, on_erasure=on_erasure,
                         on_transactions=on_transactions, on_site_change=on_site_change)
    try:
        update = context.refresh_site()  # versions edited through the API win over the site file
    except Exception:  # storage down at start: the site file; /readyz reports the store
        log.warning("could not read the site versions", exc_info=True)
    else:
        if update is not None and (override := site_file_override(config, update)):
            log.warning(override, extra={"site_version": update.version})
    app.add_middleware(CachedReadsMiddleware, routes=lambda: app.state.cached_reads)
    app.add_middleware(SameOriginWritesMiddleware, metrics=context.metrics)  # (refusals audited)
    app.add_middleware(AuditMiddleware, storage=storage)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.api.max_body_bytes, metrics=context.metrics)
    app.add_middleware(MetricsMiddleware, metrics=context.metrics)
    app.add_middleware(ForwardedForCheckMiddleware, forwarded_allow_ips=config.api.forwarded_allow_ips,
                       metrics=context.metrics)
    app.state.context = context  # what storelens.api.deps hands to the routes
    for router in ROUTERS:
        app.include_router(router)
    #: the cached reads' (path regex, route, role), answered before routing when fresh (storelens.api.cache)
    app.state.cached_reads = [(r.path_regex, r, role) for router in ROUTERS for r in router.routes
                              if isinstance(r, APIRoute) and (role := cached_role(r)) is not None]
    # path pattern -> methods of every route, for the Allow header of a 405 (see _http_error)
    app.state.route_methods = [(r.path_regex, frozenset(r.methods)) for router in ROUTERS for r in router.routes
                               if isinstance(r, APIRoute) and r.methods]
    app.state.route_methods += [(r.path_regex, frozenset(r.methods)) for r in app.router.routes
                                if isinstance(r, Route) and r.methods]
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for data_error in _data_errors():
        app.add_exception_handler(data_error, _data_error)
    mount_dashboard(app)  # the web dashboard at / (storelens.api.dashboard)
    if on_site_change is not None:
        chores = [*chores, SiteRedelivery(context)]
    if chores:
        from storelens.runtime.retention import ChoreThread

        thread = app.state.chores = ChoreThread(chores, metrics=context.metrics)
        app.router.on_startup.append(thread.start)
        app.router.on_shutdown.append(thread.stop)  # before the stores close (closers are appended later)
    return app


#: Seconds between two looks of :class:`SiteRedelivery` whether the newest saved site version still waits for
#: ``on_site_change``.
SITE_REDELIVER_S = 30.0


class SiteRedelivery:
    """A chore of the app (``create_app(on_site_change=...)``): :meth:`ApiContext.deliver_site` at the app's start
    (a version saved while this process was down, or whose publish failed before a restart) and every
    :data:`SITE_REDELIVER_S` (an edit whose publish failed answered 503; another replica's version, sent again),
    until the broker has the newest version."""

    name = "site-redelivery"

    def __init__(self, context: ApiContext, every_s: float = SITE_REDELIVER_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.context, self.every_s, self.monotonic = context, every_s, monotonic
        self._next_s: float | None = None

    def due(self) -> bool:
        return self._next_s is None or self.monotonic() >= self._next_s

    def run(self, metrics: Any = None) -> object:
        """Send the newest version if it waits (the one sent, else ``None``); a failure is logged and counted by
        :meth:`~ApiContext.deliver_site`, and tried again when next due."""
        self._next_s = self.monotonic() + self.every_s
        try:
            return self.context.deliver_site()
        except Exception:  # noqa: BLE001 (logged and counted there)
            return None


def _json_safe(value: Any) -> Any:
    """``value`` with each NaN or infinite float as a string (``"nan"``, ``"inf"``, ``"-inf"``)."""
    if isinstance(value, float) and value - value != 0:
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's HTTP error response; a 405 lists in ``Allow`` the methods of every route of the path.

    Starlette's router answers 405 with the methods of the first route matching the path only
    (e.g. ``GET`` for ``/v1/customers/{id}``, which also has ``DELETE``).
    """
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        path, root = request.scope["path"], request.scope.get("root_path", "")
        path = path[len(root):] if root and path.startswith(root) else path
        methods = {m for regex, ms in request.app.state.route_methods if regex.match(path) for m in ms}
        if methods:
            exc = StarletteHTTPException(405, exc.detail, headers={**(exc.headers or {}),
                                                                   "Allow": ", ".join(sorted(methods))})
    if isinstance(exc, HTTPErrorWithFields):
        return _EscapedJSONResponse({"detail": exc.detail, **exc.fields}, status_code=exc.status_code,
                                    headers=exc.headers)
    return await http_exception_handler(request, exc)


class _EscapedJSONResponse(JSONResponse):
    """JSON with any lone surrogate written as its ``\\uXXXX`` escape (UTF-8 has none for it)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("utf-8", "backslashreplace")


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, also when the refused input holds what its own answer, echoing the input, could not write (a
    500 before): a NaN or infinite number (a JSON body may say ``NaN``, the answer's JSON may not) is written as a
    string (``{"detail": [{"loc": ["body", "a", 0], "msg": "Input should be a finite number", "input": "nan"}]}``),
    a lone surrogate (a JSON body's ``"\\ud800"``) as its escape."""
    assert isinstance(exc, RequestValidationError)
    return _EscapedJSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


def _data_errors() -> list[type[Exception]]:
    """The drivers' ``DataError`` (a value the database refuses): SQLite's, PostgreSQL's where installed."""
    import sqlalchemy.exc

    errors: list[type[Exception]] = [sqlite3.DataError, sqlalchemy.exc.DataError]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite only
        return errors
    return [*errors, psycopg.DataError]


async def _data_error(request: Request, exc: Exception) -> Response:
    """422 for a value the database refused (e.g. NUL in text on PostgreSQL) that no request validation caught:
    the safety net of :data:`~storelens.api.deps.Text`, logged and counted (``storelens_errors_total{reason=
    "data_error"}``)."""
    log.warning("the database refused a value of %s %s: %s", request.method, request.url.path[:200],
                str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
    request.app.state.context.metrics.count_error("data_error")
    return JSONResponse({"detail": "a value of the request cannot be stored (e.g. a NUL character in text)"},
                        status_code=422)


class ForwardedForCheckMiddleware:
    """A warning, once per peer address, for a request with ``X-Forwarded-For`` from a peer outside
    ``api.forwarded_allow_ips`` (uvicorn then ignores the header: the client address is the proxy's, shared by
    everyone behind it in the sign-in limits and the audit log); each such request counted as
    ``storelens_errors_total{reason="forwarded_for_not_trusted"}``. Uvicorn has replaced the client by an entry of
    the header when it trusted the peer, so a client address not among the entries is the untrusted peer's."""

    #: Peers warned about at most (then no more warnings; the count goes on).
    MAX_PEERS = 1024

    def __init__(self, app: ASGIApp, forwarded_allow_ips: str, metrics: Any) -> None:
        from uvicorn.middleware.proxy_headers import _TrustedHosts

        self.app = app
        self.forwarded_allow_ips = forwarded_allow_ips
        self.trusted = _TrustedHosts(forwarded_allow_ips)
        self.metrics = metrics
        self._warned: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.trusted.always_trust:
            forwarded = [v for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
            if forwarded:
                self._check(scope, b",".join(forwarded).decode("latin-1"))
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, forwarded: str) -> None:
        peer = (scope.get("client") or ("", 0))[0]
        if not peer or peer in {h.strip() for h in forwarded.split(",")} or peer in self.trusted:
            return
        self.metrics.count_error("forwarded_for_not_trusted")
        if peer not in self._warned and len(self._warned) < self.MAX_PEERS:
            self._warned.add(peer)
            log.warning("a request from %s has X-Forwarded-For, but %s is not in api.forwarded_allow_ips (%s): the "
                        "header is ignored and every client behind that proxy shares its address (sign-in limits, "
                        "audit log); add the proxy's address or network to api.forwarded_allow_ips",
                        peer, peer, self.forwarded_allow_ips)


class BodyLimitMiddleware:
    """413 for a request body over ``max_bytes`` (``api.max_body_bytes``), before the app parses it: at once when
    ``Content-Length`` says so, else when the chunks read so far go over it (a body sent in chunks). FastAPI reads
    and parses a body before the route's dependencies (the sign-in) run. Counted as
    ``storelens_errors_total{reason="body_too_large"}``."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Any) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            self._count(scope, int(length))
            await self._refuse(scope, send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    self._count(scope, seen)
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge:  # raised where no HTTP error handler answered it
            if started:
                raise
            await self._refuse(scope, send)

    def _count(self, scope: Scope, size: int) -> None:
        self.metrics.count_error("body_too_large")
        log.info("request body of %s %s refused: %d bytes or more, over api.max_body_bytes (%d)",
                 scope.get("method", ""), scope.get("path", "")[:200], size, self.max_bytes)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await JSONResponse({"detail": _BodyTooLarge(self.max_bytes).detail}, status_code=413,
                           headers={"Connection": "close"})(scope, _no_body, send)


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body too large: more than {max_bytes} bytes (api.max_body_bytes)")


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def warn_forwarded_any(forwarded_allow_ips: str) -> None:
    """A warning at start when ``api.forwarded_allow_ips`` is ``*``: uvicorn then takes the first
    ``X-Forwarded-For`` entry, the client's own when the proxy appends to the header."""
    if "*" in [h.strip() for h in forwarded_allow_ips.split(",")]:
        log.warning("api.forwarded_allow_ips is \"*\": the client address is the first X-Forwarded-For entry, "
                    "which a client sets itself behind a proxy that appends to the header (sign-in limits and the "
                    "audit log then believe it); set the proxies' addresses instead, unless the proxy overwrites "
                    "the header")


#: Seconds uvicorn waits at shutdown for the responses in flight before it cancels them: below Kubernetes' default
#: terminationGracePeriodSeconds (30 s), so the app's own shutdown (chores, stores closed) runs before a SIGKILL;
#: also ends any response still open.
SHUTDOWN_GRACE_S = 20


def uvicorn_config(app: "FastAPI", host: str, port: int, **overrides: Any) -> "uvicorn.Config":
    """How :func:`serve` runs ``app``: the client address from ``X-Forwarded-For`` of the proxies in
    ``api.forwarded_allow_ips`` only (a warning when that is ``*``: :func:`warn_forwarded_any`). ``overrides``: other
    ``uvicorn.Config`` settings (tests)."""
    import uvicorn

    warn_forwarded_any(app.state.context.config.api.forwarded_allow_ips)
    # log_config None: uvicorn's loggers (a 500's traceback, a refused request) go to the process' JSON logs
    # (storelens.logs), not through uvicorn's own plain-text handlers
    settings: dict[str, Any] = {"log_level": "warning", "log_config": None, "proxy_headers": True,
                                "forwarded_allow_ips": app.state.context.config.api.forwarded_allow_ips,
                                "timeout_graceful_shutdown": SHUTDOWN_GRACE_S}
    return uvicorn.Config(app, host=host, port=port, **{**settings, **overrides})


def serve(app: "FastAPI", host: str, port: int, stop: "threading.Event | None" = None) -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT (or ``stop`` is set), then return normally.

    Stops accepting, ends the open live streams (:func:`~storelens.api.routes.live.end_streams`), finishes
    in-flight requests (at most :data:`SHUTDOWN_GRACE_S`) and returns (exit code 0);
    uvicorn's own handlers would re-raise the signal after shutting down.
    """
    import contextlib
    import signal

    import uvicorn

    from .routes.live import end_streams

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn waits for every response to end: the live streams (open dashboards) never would
            end_streams(app)
            await super().shutdown(sockets)

    server = Server(uvicorn_config(app, host, port))

    def _stop(_signum, _frame) -> None:
        server.should_exit = True

    if stop is not None:
        def _watch() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=_watch, name="serve-stop", daemon=True).start()
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
