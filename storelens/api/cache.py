"""A short-lived cache of the aggregate read routes' answers (the dashboard's reads under load).

Many dashboards and integrations ask the same questions at once (the store's occupancy, today's
counts, the day's heatmap). :class:`ResponseCache` keeps the last answer (status 200, the exact
bytes and headers FastAPI produced) of each route in :data:`CACHED_ROUTES` for ``api.cache_ttl_s``
(default 1 s), keyed by the request's path and the normalized query (parameters sorted, repeated ones in
order). An entry is also dropped as soon as this process writes to the store (the storage's
``write_generation`` changes: an acknowledged alert, a test's new rows), so only other processes'
writes (the pipeline's, in the distributed mode) can be seen up to the TTL late.

A hit still needs valid credentials of the route's role (:func:`cached_principal`, the same
:meth:`~storelens.api.security.Authenticator.authenticate` as the routes' guard, from its cache only: it runs on the
event loop, which must never wait for the database; in the app's route handler a user or key not freshly cached is
read in the thread pool, and the entry still answers); anything else (no or bad credentials, a dashboard cookie due
for renewal, a malformed query, an error) takes the normal path (its guard runs in the thread pool), so
401/403/404/422 answers are unchanged. Routes reading the live state
(:data:`LIVE_ROUTES`) are not cached when the app has one (Redis: changes there are no store writes).

Example:
    >>> cache = ResponseCache(ttl_s=1.0)
    >>> cache.key("/v1/counts", b"end_ms=5&camera_id=a&start_ms=1")
    ('/v1/counts', (('camera_id', 'a'), ('end_ms', '5'), ('start_ms', '1')))
    >>> cache.put(("/v1/occupancy", ()), 0, b"{}", [(b"content-type", b"application/json")], now=10.0)
    >>> cache.get(("/v1/occupancy", ()), 0, now=10.5) is not None, cache.get(("/v1/occupancy", ()), 1, now=10.5)
    (True, None)
    >>> cache.get(("/v1/occupancy", ()), 0, now=11.5) is None
    True
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from storelens.config.auth import role_rank

from .security import API_KEY_PREFIX, COOKIE_NAME, Principal, credential_of

#: GET routes whose answer depends only on the query and the stored data (never on who asks).
CACHED_ROUTES = frozenset({
    "/v1/occupancy", "/v1/occupancy/{camera_id}", "/v1/counts", "/v1/zones", "/v1/zones/stats", "/v1/queues",
    "/v1/interest", "/v1/alerts", "/v1/kpis", "/v1/cameras/{camera_id}/heatmap", "/v1/heatmap", "/v1/flows",
    "/v1/paths/top", "/v1/demographics",
})
#: Of those, the routes that read the live state (Redis, distributed mode) when the app has one: its
#: changes are not writes to the store, so with a live state these are never cached (they are cheap).
LIVE_ROUTES = frozenset({"/v1/occupancy", "/v1/occupancy/{camera_id}", "/v1/zones", "/v1/queues"})
#: An entry this old (share of the TTL) is renewed by the next request while the others are still answered from it.
RENEW_AT = 0.8
#: Most entries kept (the oldest half is dropped when full).
MAX_ENTRIES = 2048
#: Largest answer kept (bytes).
MAX_BODY_BYTES = 4 << 20

Key = tuple[str, tuple[tuple[str, str], ...]]


class ResponseCache:
    """Answers by ``(route, normalized query)``, valid for ``ttl_s`` and one storage write generation."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[Key, tuple[float, Any, bytes, list[tuple[bytes, bytes]]]] = {}
        self._lock = threading.Lock()
        #: key -> (event loop, future of the answer being computed, write generation it started at)
        self.inflight: dict[Key, tuple[asyncio.AbstractEventLoop, asyncio.Future, Any]] = {}
        self.hits = self.misses = 0

    @staticmethod
    def key(route: str, query_string: bytes) -> Key:
        """``route`` and the query's parameters, sorted by name (repeated names keep their order)."""
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        return route, tuple(sorted(pairs, key=lambda kv: kv[0]))

    def entry(self, key: Key, generation: Any, now: float | None = None
              ) -> tuple[float, Any, bytes, list[tuple[bytes, bytes]]] | None:
        """``(stored_at, generation, body, headers)`` while valid (younger than the TTL, same generation)."""
        hit = self._entries.get(key)
        now = time.monotonic() if now is None else now
        if hit is None or hit[1] != generation or now - hit[0] >= self.ttl_s:
            return None
        return hit

    def get(self, key: Key, generation: Any, now: float | None = None
            ) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        """The body and headers while valid, else ``None``."""
        hit = self.entry(key, generation, now)
        return None if hit is None else (hit[2], hit[3])

    def put(self, key: Key, generation: Any, body: bytes, headers: list[tuple[bytes, bytes]],
            now: float | None = None) -> None:
        if len(body) > MAX_BODY_BYTES:
            return
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                for old in sorted(self._entries, key=lambda k: self._entries[k][0])[:MAX_ENTRIES // 2]:
                    self._entries.pop(old, None)
            self._entries[key] = (time.monotonic() if now is None else now, generation, body, headers)


def cached_principal(request: Request, role: str) -> Principal | None:
    """The caller when their credentials are valid for ``role`` and need no renewal; else ``None``.

    Mirrors the routes' guard (:func:`storelens.api.security.require_role`): ``Authorization:
    Bearer`` first, else the dashboard's cookie (unless it is due for renewal, which the guard does).
    Called on the event loop: only a principal the authenticator has cached counts (``None`` when it would
    read the database: the guard then does, in the thread pool).
    """
    auth = request.app.state.context.auth
    credential = credential_of(request)
    if not credential:
        return None
    return _allowed(request, auth, credential, auth.authenticate(credential, cached_only=True), role)


async def principal_of(request: Request, role: str) -> Principal | None:
    """:func:`cached_principal`, reading the database (in the thread pool, as the routes' guard does) when the
    user or key is not freshly cached: a cache entry is answered whatever the age of the principal cache."""
    principal = cached_principal(request, role)
    credential = credential_of(request)
    if principal is not None or not credential:
        return principal
    auth = request.app.state.context.auth
    return _allowed(request, auth, credential, await run_in_threadpool(auth.authenticate, credential), role)


def _allowed(request: Request, auth: Any, credential: str, principal: Principal | None, role: str
             ) -> Principal | None:
    """``principal`` when it may read a route of ``role`` with ``credential`` without a renewal, else ``None``."""
    if principal is None or role_rank(principal.role) < role_rank(role):
        return None
    if credential == request.cookies.get(COOKIE_NAME) and not credential.startswith(API_KEY_PREFIX):
        age = auth.token_age_s(credential)  # a cookie (or a bearer equal to it: a miss at worst)
        if age is None or age > auth.cfg.session_ttl_s / 2:
            return None
    return principal


def _generation(request: Request) -> Any:
    return getattr(request.app.state.context.storage, "write_generation", None)


def cache_of(request: Request) -> ResponseCache | None:
    """The app's cache (made on first use from ``api.cache_ttl_s``); ``None`` when it is 0."""
    state = request.app.state
    cache = getattr(state, "response_cache", None)
    if cache is None:
        ttl = float(getattr(state.context.config.api, "cache_ttl_s", 0.0))
        cache = state.response_cache = ResponseCache(ttl) if ttl > 0 else False
    return cache or None


def cached_handler(path: str, role: str, handler: Callable[[Request], Awaitable[Response]]
                   ) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` (a route's request handler) answering from the app's :class:`ResponseCache`.

    One computation per key at a time: concurrent misses wait for it. Once an entry is RENEW_AT of its TTL
    old, the next request recomputes it while the others are still answered from it, so entries
    are renewed before they expire instead of every client missing at once.
    """

    live_route = path in LIVE_ROUTES

    async def handle(request: Request) -> Response:
        cache = cache_of(request)
        if cache is None or request.method != "GET" or (live_route and request.app.state.context.live is not None):
            return await handler(request)
        key = cache.key(request.scope["path"], request.scope.get("query_string", b""))  # the path with its ids
        generation = _generation(request)
        now = time.monotonic()
        entry = cache.entry(key, generation, now)
        loop = asyncio.get_running_loop()
        flight = cache.inflight.get(key)
        if flight is not None and (flight[0] is not loop or flight[2] != generation):
            flight = None  # another event loop's (tests), or computed before a write this request must see
        if entry is not None or flight is not None:
            # a principal not freshly cached is read in the thread pool (not on the loop): the entry still answers
            principal = await principal_of(request, role)
            if principal is not None:
                request.state.principal = principal
                if entry is not None and (now - entry[0] < cache.ttl_s * RENEW_AT or flight is not None):
                    return _respond(cache, entry[2], entry[3])
                if entry is None and flight is not None:
                    shared = await asyncio.shield(flight[1])
                    if shared is not None:
                        return _respond(cache, *shared)
        own = key not in cache.inflight
        future = loop.create_future()
        if own:
            cache.inflight[key] = (loop, future, generation)
        result = None
        try:
            response = await handler(request)
            if response.status_code == 200 and not response.background and hasattr(response, "body") \
                    and not any(k == b"set-cookie" for k, _ in response.raw_headers):
                result = (bytes(response.body), list(response.raw_headers))
                cache.put(key, generation, *result)
            cache.misses += 1
            return response
        finally:
            if own:
                cache.inflight.pop(key, None)
                future.set_result(result)

    return handle


def _respond(cache: ResponseCache, body: bytes, headers: list[tuple[bytes, bytes]]) -> Response:
    cache.hits += 1
    response = Response(content=body, status_code=200)
    response.raw_headers = list(headers)
    return response


def cached_role(route: Any) -> str | None:
    """The role a cached GET route needs (the highest of its guards), ``None`` when the route is not cached."""
    if getattr(route, "path", None) not in CACHED_ROUTES or getattr(route, "methods", None) != {"GET"}:
        return None
    roles = [r for r in (getattr(d.dependency, "role", None) for d in getattr(route, "dependencies", [])) if r]
    return max(roles, key=role_rank) if roles else None


class CachedReadsMiddleware:
    """Answers the fresh cache hits of :data:`CACHED_ROUTES` before the app's routing (pure ASGI).

    Under load most reads are hits; through the app each still pays Starlette's route matching over
    every route, FastAPI's dependency solving and the response object (a third of a hit's CPU). Here a
    hit costs the path match against the cached routes, the credential check of the route's role
    (:func:`cached_principal`, as in :func:`cached_handler`) and the send. Only entries younger than RENEW_AT of
    the TTL are answered (the app's handler renews older ones); anything else (a miss, other
    credentials, a live route with a live state) goes on to the app unchanged. ``scope["route"]`` is
    set, so the metrics count the hit under its route template.
    """

    def __init__(self, app: Any, routes: Callable[[], list[tuple[Any, Any, str]]]) -> None:
        self.app = app
        self.routes = routes  # [(compiled path regex, route, role)], read once the routers are included

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET":
            hit = self._hit(scope)
            if hit is not None:
                body, headers = hit
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _hit(self, scope: Any) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        path = scope["path"]
        match = next(((route, role) for regex, route, role in self.routes() if regex.match(path)), None)
        if match is None:
            return None
        route, role = match
        app = scope.get("app")
        state = getattr(app, "state", None)
        cache = getattr(state, "response_cache", None)
        if not cache:
            return None
        context = state.context
        if route.path in LIVE_ROUTES and context.live is not None:
            return None
        key = cache.key(path, scope.get("query_string", b""))
        now = time.monotonic()
        entry = cache.entry(key, getattr(context.storage, "write_generation", None), now)
        if entry is None or now - entry[0] >= cache.ttl_s * RENEW_AT:
            return None
        request = Request(scope)
        principal = cached_principal(request, role)
        if principal is None:
            return None
        scope["route"] = route
        scope.setdefault("state", {})["principal"] = principal
        cache.hits += 1
        return entry[2], entry[3]
