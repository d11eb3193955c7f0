"""What the routes depend on: the app's :class:`ApiContext` and ``Annotated`` dependency aliases.

:func:`~storelens.api.app.create_app` stores one :class:`ApiContext` on
``app.state.context``; routes never see the app, they declare what they use:

* ``StorageDep``, ``LiveDep``, ``ConfigDep``, ``MetricsDep``, ``ErasureDep``: the app's dependencies;
* ``GalleryDep``: the customer gallery (503 when faces are disabled);
* ``CameraDep``: the ``{camera_id}`` path parameter validated into its :class:`CameraConfig` (404 when unknown);
* ``StartMs``/``OptStartMs``/``EndMs``/``FromMs``/``ToMs``/``CustomerId``: shared request parameters,
  with :func:`check_range`/:func:`resolve_range` for the ranges they form;
* ``Text``: every free-text string of a request (query, path, form, body field): 422 for text the databases
  cannot store (NUL, lone surrogates), which would otherwise fail in the driver.

Only dependencies without request parameters of their own (and ``CameraDep``, a path
parameter) are dependency functions: FastAPI lists a dependency's query parameters after
the route's own in the OpenAPI schema, so shared query parameters are plain aliases.

FastAPI runs dependencies before it validates the route's own parameters, so a
dependency that raised would answer 404 (unknown camera) or 503 (faces disabled) to a
request that is also malformed. Ours return their error instead, and :class:`ApiRoute`
(the route class of every router, see :func:`api_router`) raises it once the whole
request validated: a malformed request is 422 whatever its camera. Their aliases are
typed with what the route body receives.
"""
from __future__ import annotations

import functools
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Callable, Protocol

import anyio
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from pydantic import AfterValidator

from storelens.config import CameraConfig, SiteConfig
from storelens.config.auth import Role, role_rank
from storelens.config.base import storable_text
from storelens.contract import messages as m
from storelens.storage import Storage
from storelens.storage.site import has_rows

from .metrics import Metrics
from .security import Authenticator, require_role  # noqa: F401  (routes import the guard from here)

if TYPE_CHECKING:  # the gallery (numpy, FAISS) is only imported where faces are enabled
    from storelens.storage import GalleryStore

#: Largest timestamp accepted in a query (keeps every value a valid SQL/JSON integer).
MAX_TS_MS = 2**53 - 1
#: Cap of ``limit_points`` (tracks) and ``limit`` (crossings).
MAX_POINTS = 100_000
DAY_MS = 86_400_000
#: Customer ids: pseudonymous tokens (``cust-`` + hex by default), never free text.
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
FACES_DISABLED = "face recognition is disabled: no customer gallery is configured"
#: A free-text string of a request (add ``Query``/``Path``/``Form``/``Field`` constraints beside it).
Text = Annotated[str, AfterValidator(storable_text)]


class Refused:
    """The HTTP error of a dependency, raised by :class:`ApiRoute` once the request validated."""

    __slots__ = ("error",)

    def __init__(self, error: HTTPException) -> None:
        self.error = error


class ApiRoute(APIRoute):
    """A route that raises its dependencies' :class:`Refused` errors before the route body runs.

    FastAPI calls the endpoint only when every parameter is valid (else it answers 422),
    so a refusal comes after validation, like a check in the route body.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        from .models import INVALID_REQUEST, UNREADABLE_BODY

        # Every 422 of a route (FastAPI's request validation and the routes' own checks) is documented
        # as one schema; routes without request parameters never answer 422. FastAPI answers 400 to a
        # body it cannot decode.
        has_body = bool({m.upper() for m in kwargs.get("methods") or ()} & {"POST", "PUT", "PATCH"})
        kwargs["responses"] = {**INVALID_REQUEST, **(UNREADABLE_BODY if has_body else {}),
                               **(kwargs.get("responses") or {})}

        def refuse(values: dict[str, Any]) -> None:
            for value in values.values():
                if isinstance(value, Refused):
                    raise value.error

        if inspect.isasyncgenfunction(endpoint):  # a stream (Server-Sent Events): FastAPI iterates it
            @functools.wraps(endpoint)
            async def checked(**values: Any) -> Any:
                refuse(values)
                async for item in endpoint(**values):
                    yield item
        else:
            # Sync like the routes (run in the threadpool); FastAPI awaits the result of a wrapped coroutine function.
            @functools.wraps(endpoint)
            def checked(**values: Any) -> Any:
                refuse(values)
                return endpoint(**values)

        super().__init__(path, checked, **kwargs)
        if not (get_flat_params(self.dependant) or self.body_field):
            self.responses.pop(422, None)
            self.response_fields.pop(422, None)

    def get_route_handler(self) -> Callable[..., Any]:
        """FastAPI's handler; for the aggregate reads of :data:`~storelens.api.cache.CACHED_ROUTES`,
        answering from the app's short-lived response cache (:mod:`storelens.api.cache`)."""
        from .cache import CACHED_ROUTES, cached_handler

        handler = super().get_route_handler()
        roles = [getattr(d.dependency, "role", None) for d in self.dependencies]
        roles = [r for r in roles if r is not None]
        if self.path not in CACHED_ROUTES or not roles or self.methods != {"GET"}:
            return handler
        return cached_handler(self.path, max(roles, key=role_rank), handler)


def api_router(tag: str, *, role: Role | None) -> APIRouter:
    """The router of one resource: :class:`ApiRoute` routes, tagged ``tag``, open to ``role`` and above.

    ``role`` is required so that no router is left unguarded by omission; ``None`` (public) is for
    the probes ``/healthz`` and ``/readyz`` only. A route needing more adds
    ``dependencies=[require_role("admin")]``.
    """
    return APIRouter(tags=[tag], route_class=ApiRoute,
                     dependencies=[] if role is None else [Depends(require_role(role))])


class LiveState(Protocol):
    """What the API reads from the live state (:class:`storelens.storage.live.RedisLiveState`)."""

    def occupancy(self, camera_id: str) -> m.OccupancyUpdate | None: ...

    def last_seen(self, camera_id: str) -> int | None: ...

    def ping(self) -> bool: ...


log = logging.getLogger(__name__)
#: Seconds between two looks for a site version saved by another API replica or the CLI.
SITE_CHECK_S = 2.0


@dataclass
class ApiContext:
    """Everything the routes of one app read: see :func:`~storelens.api.app.create_app`.

    ``config`` is the site in force: the site file, then the newest version edited through the
    API (``/v1/site``); :meth:`refresh_site` picks up versions saved elsewhere (another replica).
    """

    config: SiteConfig
    storage: Storage
    metrics: Metrics
    #: Sign-in, tokens, API keys (:mod:`storelens.api.security`).
    auth: Authenticator
    live: LiveState | None = None
    gallery_store: GalleryStore | None = None
    on_erasure: Callable[[str], object] | None = None
    #: Called with the transactions of each ``POST /v1/transactions`` (e.g. publish to ``pos-transactions``).
    on_transactions: Callable[[list[m.PosTransaction]], object] | None = None
    #: Called with each saved site version (e.g. publish it to the compacted ``site-config`` topic).
    on_site_change: Callable[[m.SiteUpdate], object] | None = None
    #: The site version in force (0: the site file).
    site_version: int = 0
    #: The newest site version ``on_site_change`` took (:meth:`deliver_site`; 0 at start: the newest is sent again).
    site_delivered: int = 0
    _site_checked: float = field(default=0.0, repr=False)

    @property
    def cameras(self) -> dict[str, CameraConfig]:
        return {c.id: c for c in self.config.cameras}

    def site_is_stale(self) -> bool:
        return time.monotonic() - self._site_checked > SITE_CHECK_S

    def refresh_site(self) -> m.SiteUpdate | None:
        """Put the newest saved site version in force if it is newer than the one in force (blocking I/O); that
        version, or ``None`` when there is none newer."""
        from storelens.config import with_site_update
        from storelens.storage.site import site_update

        self._site_checked = time.monotonic()
        update = site_update(self.storage, self.config.store.id, self.site_version)
        if update is not None:
            self.set_site(update.version, with_site_update(self.config, update))
        return update

    def deliver_site(self) -> m.SiteUpdate | None:
        """Pass the newest saved site version to ``on_site_change`` when it is newer than the last one it took
        (:attr:`site_delivered`), then again while a newer one was saved meanwhile (blocking I/O); the last one
        passed, ``None`` when none was newer.

        ``on_site_change`` raises when the version did not reach the pipeline (the broker did not acknowledge
        it): that (or a storage error) is logged, counted (``storelens_errors_total{reason="site_not_delivered"}``)
        and raised; the chore of
        :func:`~storelens.api.app.create_app` calls this again (at the app's start, then every
        :data:`~storelens.api.app.SITE_REDELIVER_S`). Sending again is harmless: consumers keep the highest
        version. The look after each send also puts the newest version last on the compacted topic when another
        process's older version reached the broker after it."""
        from storelens.storage.site import site_update

        if self.on_site_change is None:
            return None
        after, sent = self.site_delivered, None
        try:
            while (update := site_update(self.storage, self.config.store.id, after)) is not None:
                self.on_site_change(update)
                after, sent = update.version, update
                self.site_delivered = max(self.site_delivered, after)
        except Exception:
            log.exception("newest site version not delivered to the pipeline", extra={"after_version": after})
            self.metrics.count_error("site_not_delivered")
            raise
        return sent

    def set_site(self, version: int, config: SiteConfig) -> None:
        if version > self.site_version:
            self.config, self.site_version = config, version

    def camera(self, camera_id: str) -> CameraConfig:
        """The configured camera ``camera_id``; 404 when there is none."""
        cam = self.cameras.get(camera_id)
        if cam is None:
            raise HTTPException(404, f"unknown camera {camera_id!r}")
        return cam

    def history_camera(self, camera_id: str, *tables: Any) -> CameraConfig | None:
        """The configured camera ``camera_id``, or ``None`` for one a site version removed whose history
        ``tables`` still hold rows of (its stored data answers); 404 when neither."""
        cam = self.cameras.get(camera_id)
        if cam is None and not has_rows(self.storage, tables, camera_id=camera_id):
            raise HTTPException(404, f"unknown camera {camera_id!r}")  # as camera(): neither in config nor data
        return cam


async def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.context
    if ctx.site_is_stale():
        try:
            await anyio.to_thread.run_sync(ctx.refresh_site)
        except Exception:  # storage down: keep the site in force; the route's own read reports the outage
            log.warning("could not look for a newer site version", exc_info=True)
    return ctx


ContextDep = Annotated[ApiContext, Depends(get_context)]


async def get_config(ctx: ContextDep) -> SiteConfig:
    return ctx.config


async def get_storage(ctx: ContextDep) -> Storage:
    return ctx.storage


async def get_live(ctx: ContextDep) -> LiveState | None:
    return ctx.live


async def get_metrics(ctx: ContextDep) -> Metrics:
    return ctx.metrics


async def get_erasure(ctx: ContextDep) -> Callable[[str], object] | None:
    return ctx.on_erasure


async def get_gallery(ctx: ContextDep) -> GalleryStore | Refused:
    return Refused(HTTPException(503, FACES_DISABLED)) if ctx.gallery_store is None else ctx.gallery_store


ConfigDep = Annotated[SiteConfig, Depends(get_config)]
StorageDep = Annotated[Storage, Depends(get_storage)]
LiveDep = Annotated["LiveState | None", Depends(get_live)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ErasureDep = Annotated["Callable[[str], object] | None", Depends(get_erasure)]
GalleryDep = Annotated["GalleryStore", Depends(get_gallery)]

# -- request parameters ----------------------------------------------------------

CameraId = Annotated[Text, Path(description="Camera id from the site configuration.", max_length=200)]
StartMs = Annotated[int, Query(ge=0, le=MAX_TS_MS, description="Range start (inclusive), ms since epoch.")]
OptStartMs = Annotated[
    int | None,
    Query(ge=0, le=MAX_TS_MS, description="Range start (inclusive), ms since epoch; default the first crossing."),
]
EndMs = Annotated[
    int | None,
    Query(ge=1, le=MAX_TS_MS, description="Range end (exclusive), ms since epoch; "
          "default just after the last crossing (counts) or now + 1 day."),
]
CustomerId = Annotated[str, Path(
    description="Pseudonymous customer id: 1-128 characters, letters, digits and . _ : - (not first).",
    min_length=1, max_length=128, pattern=CUSTOMER_ID_PATTERN)]
FromMs = Annotated[
    int | None, Query(ge=0, le=MAX_TS_MS, description="Range start (inclusive), ms since epoch; default unbounded.")
]
ToMs = Annotated[
    int | None, Query(ge=1, le=MAX_TS_MS, description="Range end (exclusive), ms since epoch; default unbounded.")
]


async def get_camera(ctx: ContextDep, camera_id: CameraId) -> CameraConfig | Refused:
    try:
        return ctx.camera(camera_id)
    except HTTPException as e:
        return Refused(e)


CameraDep = Annotated[CameraConfig, Depends(get_camera)]


def check_range(start_ms: int | None, end_ms: int | None) -> None:
    """422 unless the optional bounds form a non-empty range."""
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise HTTPException(422, f"end_ms ({end_ms}) must be greater than start_ms ({start_ms})")


def resolve_range(start_ms: int, end_ms: int | None) -> tuple[int, int]:
    """``(start_ms, end_ms)`` with the end defaulting to now + 1 day; 422 when empty."""
    end = end_ms if end_ms is not None else min(int(time.time() * 1000) + DAY_MS, MAX_TS_MS)
    check_range(start_ms, end)
    return start_ms, end
