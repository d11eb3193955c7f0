"""HTTP API: counts, occupancy, tracks, crossings, demographics and customers.

History comes from :class:`~storelens.storage.Storage`; customers (returning
visitors recognised by face, pseudonymous ids, no images) from a
:class:`~storelens.faces.gallery.GalleryStore` when faces are enabled.

Build the app with :func:`create_app` (importing this module does no work)
and serve it with any ASGI server. Interactive docs are at ``/docs``, the
schema at ``/openapi.json``, Prometheus metrics at ``/metrics``. Times are
milliseconds since the Unix epoch; ranges are half-open ``[start_ms, end_ms)``.

Example:
    >>> from fastapi.testclient import TestClient
    >>> from storelens.config import parse_config
    >>> from storelens.storage import SqliteStorage
    >>> cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    >>> client = TestClient(create_app(cfg, SqliteStorage(":memory:")))
    >>> client.get("/v1/occupancy/cam-1").json()["occupancy"]
    0
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Protocol

from fastapi import FastAPI, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import storelens
from storelens import messages as m
from storelens.config import CameraConfig, SiteConfig
from storelens.storage import AGE_BAND_KEYS, EMOTION_KEYS, GENDER_KEYS, Storage, age_band

if TYPE_CHECKING:  # the gallery (numpy, FAISS) is only imported where faces are enabled
    from storelens.faces.gallery import GalleryStore

log = logging.getLogger(__name__)


class LiveState(Protocol):
    """What the API reads from the live state (:class:`storelens.live.RedisLiveState`)."""

    def occupancy(self, camera_id: str) -> m.OccupancyUpdate | None: ...

    def last_seen(self, camera_id: str) -> int | None: ...

    def ping(self) -> bool: ...

#: Largest timestamp accepted in a query (keeps every value a valid SQL/JSON integer).
MAX_TS_MS = 2**53 - 1
#: Largest bucket width: 31 days.
MAX_BUCKET_S = 86_400 * 31
#: Most buckets a single ``/v1/counts`` range may span.
MAX_BUCKETS = 100_000
#: Cap of ``limit_points`` (tracks) and ``limit`` (crossings).
MAX_POINTS = 100_000
DAY_MS = 86_400_000
#: Largest ``page_size`` of ``/v1/customers``, and the largest ``page``.
MAX_PAGE_SIZE = 500
MAX_PAGE = 1_000_000
#: Customer ids: pseudonymous tokens (``cust-`` + hex by default), never free text.
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
FACES_DISABLED = "face recognition is disabled: no customer gallery is configured"


# -- response models ---------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Status(_Out):
    status: str = Field(examples=["ok"])


class ErrorOut(_Out):
    detail: str = Field(examples=["unknown camera 'cam-9'"])


class LineOut(_Out):
    id: str
    a: tuple[float, float] = Field(description="Start point [x, y] in source pixels.")
    b: tuple[float, float] = Field(description="End point [x, y]; crossing from its left to its right is 'in'.")


class ZoneOut(_Out):
    id: str


class CameraOut(_Out):
    id: str
    lines: list[LineOut]
    zones: list[ZoneOut]


class CamerasOut(_Out):
    store_id: str
    cameras: list[CameraOut]


class InOut(_Out):
    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True)

    count_in: int = Field(alias="in", ge=0)
    count_out: int = Field(alias="out", ge=0)


class BucketOut(_Out):
    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True)

    line_id: str
    start_ms: int = Field(description="Aligned bucket start (inclusive).")
    end_ms: int = Field(description="Aligned bucket end (exclusive).")
    count_in: int = Field(alias="in", ge=0)
    count_out: int = Field(alias="out", ge=0)


class CountsOut(_Out):
    camera_id: str
    start_ms: int
    end_ms: int
    bucket_s: int
    buckets: list[BucketOut] = Field(description="Non-empty buckets ordered by (start_ms, line_id).")
    totals: dict[str, InOut] = Field(description="Per line over [start_ms, end_ms); every configured line.")


class CameraOccupancyOut(_Out):
    camera_id: str
    occupancy: int = Field(description="Ins minus outs, never below zero.")
    total_in: int
    total_out: int
    ts_ms: int = Field(description="Time of the latest update; 0 if there is none yet.")
    last_seen_ts_ms: int | None = Field(
        default=None, description="Time of the newest frame handled for this camera (live state only); "
        "absent when unknown.")


class OccupancyOut(_Out):
    store_id: str
    occupancy: int = Field(description="Sum over the store's cameras.")
    cameras: list[CameraOccupancyOut]


class TrackPointOut(_Out):
    ts_ms: int
    seq: int
    bbox_xyxy: tuple[float, float, float, float] = Field(description="[x1, y1, x2, y2] in source pixels.")
    confidence: float


class TrackOut(_Out):
    track_id: int
    points: list[TrackPointOut]


class TracksOut(_Out):
    camera_id: str
    tracks: list[TrackOut]


class CrossingOut(_Out):
    event_id: str
    line_id: str
    track_id: int
    direction: Literal["in", "out"]
    ts_ms: int
    seq: int


class CustomerSummaryOut(_Out):
    customer_id: str = Field(description="Pseudonymous id (not derived from the face).")
    created_ts_ms: int
    visits: int = Field(ge=0, description="Retained visits.")
    first_seen_ts_ms: int = Field(description="Start of the first retained visit (created_ts_ms without visits).")
    last_seen_ts_ms: int = Field(description="End of the latest visit (created_ts_ms without visits).")
    returning: bool = Field(description="The latest visit is the customer's second or later.")
    cameras: list[str] = Field(description="Cameras of the retained visits, sorted.")


class CustomersOut(_Out):
    total: int = Field(ge=0, description="Customers matching the filters (all pages).")
    page: int = Field(ge=1)
    page_size: int = Field(ge=1)
    items: list[CustomerSummaryOut] = Field(description="Most recently seen first (ties: by id).")


class VisitOut(_Out):
    visit_no: int = Field(ge=1, description="1 for the first visit; above 1 when returning.")
    first_seen_ts_ms: int
    last_seen_ts_ms: int
    cameras: list[str]


class TrackAttributesOut(_Out):
    first_ts_ms: int
    last_ts_ms: int
    last_seq: int
    n_faces: int = Field(ge=0, description="Faces seen on the track.")
    n_used: int = Field(ge=0, description="Faces that passed the quality gate and were used.")
    n_rejected: int = Field(ge=0)
    age_years: float | None = Field(description="Median age estimate; null when unknown.")
    age_low_years: float | None
    age_high_years: float | None
    age_band: str = Field(description=f"One of {', '.join(AGE_BAND_KEYS)}.")
    gender: Literal["female", "male", "unknown"]
    gender_confidence: float
    emotion: str = Field(description=f"One of {', '.join(EMOTION_KEYS)}.")
    emotion_confidence: float
    attention_share: float | None = Field(description="Share of usable faces attending; null when none.")
    final: bool = Field(description="The track has ended (no further update).")


class CustomerTrackOut(_Out):
    event_id: str
    camera_id: str
    track_id: int
    seq: int
    ts_ms: int = Field(description="Time of the match decision.")
    similarity: float = Field(description="Cosine similarity to the matched gallery entry.")
    is_new: bool = Field(description="The customer was created by this track.")
    returning: bool
    visit_no: int
    attributes: TrackAttributesOut | None = Field(description="Face attributes of the track; null if none yet.")


class AttributeSummaryOut(_Out):
    tracks_with_faces: int = Field(ge=0, description="Matched tracks with at least one face.")
    gender: Literal["female", "male", "unknown"] = Field(description="The most confident known gender.")
    gender_confidence: float
    age_years: float | None = Field(description="Age of the track with the most used faces (narrowest interval).")
    age_low_years: float | None
    age_high_years: float | None
    age_band: str


class CustomerOut(_Out):
    customer_id: str
    returning: bool
    visits: list[VisitOut] = Field(description="By visit number.")
    tracks: list[CustomerTrackOut] = Field(description="Tracks matched to the customer, oldest first.")
    summary: AttributeSummaryOut


class DemographicsOut(_Out):
    camera_id: str | None = Field(description="The camera, or null for the whole store.")
    start_ms: int | None
    end_ms: int | None
    tracks: int = Field(ge=0, description="Tracks with at least one face whose last sighting is in the range.")
    age: dict[str, int] = Field(description=f"Tracks per age band: {', '.join(AGE_BAND_KEYS)}.")
    gender: dict[str, int] = Field(description=f"Tracks per gender: {', '.join(GENDER_KEYS)}.")
    emotion: dict[str, int] = Field(description=f"Tracks per dominant emotion: {', '.join(EMOTION_KEYS)}.")


def _attribute_summary(tracks: list[dict[str, Any]]) -> AttributeSummaryOut:
    """The most confident known gender and the best-supported age over a customer's tracks."""
    known = [t["attributes"] for t in tracks if t["attributes"] is not None and t["attributes"]["n_faces"] > 0]
    gendered = [a for a in known if a["gender"] != "unknown"]
    g = max(gendered, key=lambda a: (a["gender_confidence"], a["n_used"], a["last_ts_ms"]), default=None)

    def age_key(a: dict[str, Any]) -> tuple:
        lo, hi = a["age_low_years"], a["age_high_years"]
        width = hi - lo if lo is not None and hi is not None else float("inf")
        return a["n_used"], -width, a["last_ts_ms"]

    age = max((a for a in known if a["age_years"] is not None), key=age_key, default=None)
    return AttributeSummaryOut(
        tracks_with_faces=len(known),
        gender=g["gender"] if g else "unknown", gender_confidence=g["gender_confidence"] if g else 0.0,
        age_years=age["age_years"] if age else None, age_low_years=age["age_low_years"] if age else None,
        age_high_years=age["age_high_years"] if age else None,
        age_band=age_band(age["age_years"] if age else None),
    )


# -- metrics -------------------------------------------------------------------


class _Metrics:
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


class _MetricsMiddleware:
    """Counts every HTTP request under its route template (``/v1/occupancy/{camera_id}``)."""

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label value: raw paths would explode the series count.
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - t0)


# -- app -------------------------------------------------------------------------

_NOT_FOUND = {404: {"model": ErrorOut, "description": "Unknown camera or line."}}
_FACES_OFF = {503: {"model": ErrorOut, "description": "Face recognition is disabled (no customer gallery)."}}
_UNKNOWN_CUSTOMER = {404: {"model": ErrorOut, "description": "Unknown customer."}}

CameraId = Annotated[str, Path(description="Camera id from the site configuration.", max_length=200)]
StartMs = Annotated[int, Query(ge=0, le=MAX_TS_MS, description="Range start (inclusive), ms since epoch.")]
OptStartMs = Annotated[
    int | None,
    Query(ge=0, le=MAX_TS_MS, description="Range start (inclusive), ms since epoch; default the first crossing."),
]
EndMs = Annotated[
    int | None, Query(ge=1, le=MAX_TS_MS, description="Range end (exclusive), ms since epoch; default just after the last crossing (counts) or now + 1 day.")
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


def _check_range(start_ms: int | None, end_ms: int | None) -> None:
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise HTTPException(422, f"end_ms ({end_ms}) must be greater than start_ms ({start_ms})")


def _resolve_range(start_ms: int, end_ms: int | None) -> tuple[int, int]:
    end = end_ms if end_ms is not None else min(int(time.time() * 1000) + DAY_MS, MAX_TS_MS)
    if end <= start_ms:
        raise HTTPException(422, f"end_ms ({end}) must be greater than start_ms ({start_ms})")
    return start_ms, end


def _n_buckets(start_ms: int, end_ms: int, bucket_s: int) -> int:
    """Aligned buckets that ``[start_ms, end_ms)`` touches."""
    w = bucket_s * 1000
    return (end_ms - 1) // w - start_ms // w + 1


def create_app(
    config: SiteConfig,
    storage: Storage,
    live: LiveState | None = None,
    gallery_store: GalleryStore | None = None,
    on_erasure: Callable[[str], object] | None = None,
) -> FastAPI:
    """The StoreLens API over ``storage`` for the cameras of ``config``.

    With ``live`` (e.g. :class:`~storelens.live.RedisLiveState`, distributed
    mode), ``/v1/occupancy*`` read each camera's occupancy from the live state
    (falling back to ``storage`` when it has none) and report its
    ``last_seen_ts_ms``; ``/readyz`` then also requires ``live.ping()``.

    ``gallery_store`` (a :class:`~storelens.faces.gallery.GalleryStore`)
    enables ``/v1/customers*``; without it they answer 503.
    ``/v1/demographics`` reads ``storage`` only. ``DELETE
    /v1/customers/{id}`` deletes the customer from the gallery store and
    ``storage``, then calls ``on_erasure(customer_id)`` if given (distributed
    mode: publish a ``CustomerErasure`` so the reid service drops the customer
    from its in-memory index).

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
    metrics = _Metrics()
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    app.state.storage = storage
    app.state.live = live
    app.state.config = config
    app.state.gallery_store = gallery_store
    cameras = {c.id: c for c in config.cameras}

    def camera(camera_id: str) -> CameraConfig:
        cam = cameras.get(camera_id)
        if cam is None:
            raise HTTPException(404, f"unknown camera {camera_id!r}")
        return cam

    def occupancy_of(camera_id: str) -> CameraOccupancyOut:
        st, last_seen = None, None
        if live is not None:
            try:
                st, last_seen = live.occupancy(camera_id), live.last_seen(camera_id)
            except Exception:  # live state unreachable: history still answers (readyz reports it)
                st, last_seen = None, None
        if st is None:
            st = storage.occupancy(camera_id)
        extra = {} if last_seen is None else {"last_seen_ts_ms": last_seen}
        if st is None:
            return CameraOccupancyOut(camera_id=camera_id, occupancy=0, total_in=0, total_out=0, ts_ms=0, **extra)
        return CameraOccupancyOut(camera_id=camera_id, occupancy=st.occupancy, total_in=st.total_in,
                                  total_out=st.total_out, ts_ms=st.ts_ms, **extra)

    @app.get("/healthz", response_model=Status, tags=["ops"], summary="Liveness")
    def healthz() -> Status:
        return Status(status="ok")

    @app.get(
        "/readyz", response_model=Status, tags=["ops"], summary="Readiness (storage and live state answer)",
        responses={503: {"model": Status, "description": "Storage (or the live state) does not answer."}},
    )
    def readyz() -> Response:
        try:
            ok = storage.ping() and (live is None or live.ping())
        except Exception:  # a broken backend means "not ready", never a 500
            ok = False
        if ok:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable"}, status_code=503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/cameras", response_model=CamerasOut, tags=["config"], summary="Cameras, lines and zones")
    def list_cameras() -> CamerasOut:
        return CamerasOut(
            store_id=config.store.id,
            cameras=[
                CameraOut(
                    id=c.id,
                    lines=[LineOut(id=ln.id, a=ln.a, b=ln.b) for ln in c.lines],
                    zones=[ZoneOut(id=z.id) for z in c.zones],
                )
                for c in config.cameras
            ],
        )

    @app.get("/v1/counts", response_model=CountsOut, responses=_NOT_FOUND, tags=["counts"],
             summary="Line crossings per time bucket")
    def counts(
        camera_id: Annotated[str, Query(max_length=200)],
        start_ms: OptStartMs = None,
        end_ms: EndMs = None,
        bucket_s: Annotated[int, Query(ge=1, le=MAX_BUCKET_S, description="Bucket width in seconds; "
                                       "buckets are aligned to multiples of it since the epoch.")] = 60,
        line_id: Annotated[str | None, Query(max_length=200, description="Only this line.")] = None,
    ) -> CountsOut:
        cam = camera(camera_id)
        line_ids = [ln.id for ln in cam.lines]
        if line_id is not None and line_id not in line_ids:
            raise HTTPException(404, f"unknown line {line_id!r} of camera {camera_id!r}")
        span = storage.crossing_span(camera_id)
        if start_ms is None:  # default: from the camera's first crossing (or now when there is none)
            start_ms = span[0] if span else min(int(time.time() * 1000), MAX_TS_MS - 1)
        if end_ms is None and span is not None:
            end_ms = max(span[1] + 1, start_ms + 1)
        start, end = _resolve_range(start_ms, end_ms)
        n = _n_buckets(start, end, bucket_s)
        if n > MAX_BUCKETS:
            # Any bucket_s >= this keeps n <= MAX_BUCKETS (alignment adds at most one bucket).
            min_bucket_s = -(-(end - start) // ((MAX_BUCKETS - 1) * 1000))
            hint = f" or use bucket_s >= {min_bucket_s}" if min_bucket_s <= MAX_BUCKET_S else ""
            raise HTTPException(
                422,
                f"range [{start}, {end}) at bucket_s={bucket_s} spans {n} buckets, "
                f"more than the limit of {MAX_BUCKETS}; narrow the range{hint}",
            )
        buckets = storage.counts(camera_id, start, end, bucket_s, line_id=line_id)
        stored = storage.line_totals(camera_id, start, end)
        wanted = [line_id] if line_id is not None else sorted({*line_ids, *stored})
        zero = {"in": 0, "out": 0}
        return CountsOut(
            camera_id=camera_id, start_ms=start, end_ms=end, bucket_s=bucket_s,
            buckets=[
                BucketOut(line_id=b.line_id, start_ms=b.start_ms, end_ms=b.end_ms,
                          count_in=b.count_in, count_out=b.count_out)
                for b in buckets
            ],
            totals={ln: InOut.model_validate(stored.get(ln, zero)) for ln in wanted},
        )

    @app.get("/v1/occupancy", response_model=OccupancyOut, response_model_exclude_none=True, tags=["occupancy"],
             summary="Live occupancy of the store")
    def store_occupancy() -> OccupancyOut:
        per_camera = [occupancy_of(c.id) for c in config.cameras]
        return OccupancyOut(store_id=config.store.id, occupancy=sum(c.occupancy for c in per_camera),
                            cameras=per_camera)

    @app.get("/v1/occupancy/{camera_id}", response_model=CameraOccupancyOut, response_model_exclude_none=True,
             responses=_NOT_FOUND, tags=["occupancy"], summary="Live occupancy of one camera")
    def camera_occupancy(camera_id: CameraId) -> CameraOccupancyOut:
        return occupancy_of(camera(camera_id).id)

    @app.get("/v1/cameras/{camera_id}/tracks", response_model=TracksOut, responses=_NOT_FOUND,
             tags=["tracks"], summary="Track paths of one camera")
    def tracks(
        camera_id: CameraId,
        start_ms: StartMs = 0,
        end_ms: EndMs = None,
        limit_points: Annotated[int, Query(ge=1, le=MAX_POINTS,
                                           description="Most points returned (the earliest ones).")] = 10_000,
    ) -> TracksOut:
        camera(camera_id)
        start, end = _resolve_range(start_ms, end_ms)
        paths = storage.tracks(camera_id, start, end, limit_points=limit_points)
        return TracksOut(
            camera_id=camera_id,
            tracks=[
                TrackOut(track_id=p.track_id, points=[
                    TrackPointOut(ts_ms=pt.ts_ms, seq=pt.seq, bbox_xyxy=pt.bbox_xyxy, confidence=pt.confidence)
                    for pt in p.points
                ])
                for p in paths
            ],
        )

    @app.get("/v1/cameras/{camera_id}/crossings", response_model=list[CrossingOut], responses=_NOT_FOUND,
             tags=["counts"], summary="Line crossings of one camera, in time order")
    def crossings(
        camera_id: CameraId,
        start_ms: StartMs = 0,
        end_ms: EndMs = None,
        limit: Annotated[int, Query(ge=1, le=MAX_POINTS, description="Most events returned (the earliest).")]
        = 10_000,
    ) -> list[CrossingOut]:
        camera(camera_id)
        start, end = _resolve_range(start_ms, end_ms)
        return [
            CrossingOut(event_id=e.event_id, line_id=e.line_id, track_id=e.track_id, direction=e.direction,
                        ts_ms=e.ts_ms, seq=e.seq)
            for e in storage.crossings(camera_id, start, end, limit=limit)
        ]

    # -- faces ---------------------------------------------------------------------

    def gallery() -> GalleryStore:
        if gallery_store is None:
            raise HTTPException(503, FACES_DISABLED)
        return gallery_store

    @app.get("/v1/demographics", response_model=DemographicsOut, responses=_NOT_FOUND, tags=["demographics"],
             summary="Age bands, gender and emotion of the tracks seen",
             description="Counts tracks with at least one face by estimated age band, gender and dominant "
             "emotion. A track is in the range when its last sighting is in [start_ms, end_ms). "
             "Estimates are per track (aggregated over its faces), never per image.")
    def demographics(
        camera_id: Annotated[str | None, Query(max_length=200, description="Only this camera.")] = None,
        start_ms: FromMs = None,
        end_ms: ToMs = None,
    ) -> DemographicsOut:
        if camera_id is not None:
            camera(camera_id)
        _check_range(start_ms, end_ms)
        return DemographicsOut.model_validate(storage.demographics(camera_id, start_ms, end_ms))

    @app.get("/v1/customers", response_model=CustomersOut, responses=_FACES_OFF, tags=["customers"],
             summary="Customers recognised by face, paged",
             description="Customers of the gallery, most recently seen first. `returning` keeps only returning "
             "(or only first-time) customers; `start_ms`/`end_ms` keep customers with a visit overlapping "
             "[start_ms, end_ms).")
    def list_customers(
        page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page number, from 1.")] = 1,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Customers per page.")] = 50,
        returning: Annotated[bool | None, Query(description="Only returning (true) or first-time (false).")]
        = None,
        start_ms: FromMs = None,
        end_ms: ToMs = None,
    ) -> CustomersOut:
        store = gallery()
        _check_range(start_ms, end_ms)
        total, items = store.list_customers(returning=returning, from_ts_ms=start_ms, to_ts_ms=end_ms,
                                            limit=page_size, offset=(page - 1) * page_size)
        return CustomersOut(total=total, page=page, page_size=page_size, items=[
            CustomerSummaryOut(customer_id=c.customer_id, created_ts_ms=c.created_ts_ms, visits=c.visits,
                               first_seen_ts_ms=c.first_seen_ts_ms, last_seen_ts_ms=c.last_seen_ts_ms,
                               returning=c.returning, cameras=list(c.cameras))
            for c in items
        ])

    @app.get("/v1/customers/{customer_id}", response_model=CustomerOut,
             responses={**_UNKNOWN_CUSTOMER, **_FACES_OFF}, tags=["customers"],
             summary="One customer: visits, matched tracks and their attributes",
             description="The customer's visits, the tracks matched to them with their face attributes, and a "
             "summary (the most confident known gender, the best-supported age).")
    def get_customer(customer_id: CustomerId) -> CustomerOut:
        store = gallery()
        if not store.customer_exists(customer_id):
            raise HTTPException(404, f"unknown customer {customer_id!r}")
        visits = store.visits(customer_id)
        tracks = storage.customer_tracks(customer_id)
        returning = visits[-1].returning if visits else any(t["returning"] for t in tracks)
        return CustomerOut(
            customer_id=customer_id, returning=returning,
            visits=[VisitOut(visit_no=v.visit_no, first_seen_ts_ms=v.first_ts_ms, last_seen_ts_ms=v.last_ts_ms,
                             cameras=list(v.cameras)) for v in visits],
            tracks=[CustomerTrackOut.model_validate(t) for t in tracks],
            summary=_attribute_summary(tracks),
        )

    @app.delete("/v1/customers/{customer_id}", status_code=204, response_class=Response,
                responses={**_UNKNOWN_CUSTOMER, **_FACES_OFF, 204: {"description": "The customer was erased."}},
                tags=["customers"], summary="Erase a customer (right to erasure)",
                description="Deletes the customer's embeddings and visits from the gallery and their matches "
                "from the history (anonymous per-track demographics stay), then tells the recognition service "
                "to forget them. The notification is sent even for an unknown id, so retrying a request whose "
                "notification failed (503) completes the erasure.")
    def erase_customer(customer_id: CustomerId) -> Response:
        store = gallery()
        in_gallery = store.delete_customer(customer_id)
        rows = storage.erase_customer(customer_id)
        if on_erasure is not None:
            try:
                on_erasure(customer_id)
            except Exception:
                log.exception("customer erasure not propagated", extra={"customer_id": customer_id})
                raise HTTPException(503, "the customer was deleted from the stores, but the erasure could not be "
                                    "sent to the recognition service; retry the request") from None
        if not (in_gallery or rows):
            raise HTTPException(404, f"unknown customer {customer_id!r}")
        return Response(status_code=204)

    return app


def serve(app: "FastAPI", host: str, port: int) -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT, then return normally.

    Stops accepting, finishes in-flight requests and returns (exit code 0);
    uvicorn's own handlers would re-raise the signal after shutting down.
    """
    import contextlib
    import signal

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))

    def _stop(_signum, _frame) -> None:
        server.should_exit = True

    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
