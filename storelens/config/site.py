"""Typed site configuration: one YAML file per store.

Read once at start with :func:`load_config`; every model forbids unknown
keys, and errors name the bad field, e.g.::

    config error in site.yaml: cameras.0.lines.0.a: must be two numbers [x, y]

Strings may reference environment variables as ``${NAME}`` or
``${NAME:-default}``. ``${STORELENS_ASSETS}`` defaults to the shared assets
folder beside the checkout (see :func:`storelens.paths.assets_dir`).
Relative file paths are resolved against the configuration file's folder.

Example:
    >>> cfg = SiteConfig.model_validate({
    ...     "store": {"id": "s1"},
    ...     "cameras": [{"id": "cam-1", "source": "video.mp4",
    ...                  "lines": [{"id": "door", "a": [0, 300], "b": [640, 300]}]}],
    ... })
    >>> cfg.cameras[0].lines[0].b
    (640.0, 300.0)
"""
from __future__ import annotations

import copy
import fnmatch
import logging
import math
import os
import pathlib
import re
import threading
import urllib.parse
from typing import Annotated, Literal

import yaml
from pydantic import (Field, PrivateAttr, SerializeAsAny, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from storelens.config.alerts import AlertsConfig
from storelens.config.auth import AuthConfig
from storelens.config.base import FiniteFloat, Strict, check_storable, follow_unset
from storelens.config.groups import GroupsConfig, StaffConfig
from storelens.config.behaviour import (
    FLOOR_UNCHECKED,
    CameraFloorConfig,
    FloorPlanConfig,
    HeatmapConfig,
    JourneyLinkConfig,
    JourneysConfig,
    StationaryConfig,
    floor_homography,
)
from storelens.config.audit import AuditConfig
from storelens.config.detectors import DetectorConfig
from storelens.config.env import expand_env, has_template, mask_templates, template_names
from storelens.config.faces import FacesConfig
from storelens.config.privacy import PrivacyConfig
from storelens.config.rollup import ChainConfig, RollupConfig
from storelens.config.tracker_bytereid import ByteReidTrackerConfig
from storelens.config.trackers import TrackerConfig
from storelens.errors import ConfigError

log = logging.getLogger(__name__)

#: ``[x, y]`` in source pixels: finite numbers (NaN or inf is an error naming the field).
Point = tuple[FiniteFloat, FiniteFloat]


WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_hhmm(text: object, *, allow_24: bool = False) -> int:
    """``"09:30"`` -> 570 minutes after midnight (``"24:00"`` -> 1440 where ``allow_24``)."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"{text!r} is not a time HH:MM")
    h, m = int(parts[0]), int(parts[1])
    if (h, m) == (24, 0) and allow_24:
        return 24 * 60
    if h > 23 or m > 59:
        raise ValueError(f"{text!r} is not a time between 00:00 and 23:59")
    return h * 60 + m


class StoreConfig(Strict):
    """The store: id, name, its IANA time zone and opening hours (the buckets of the KPIs).

    ``opening_hours`` maps ``mon`` .. ``sun`` to ``[open, close]`` (``HH:MM``, local time); a
    closing time at or before the opening time is after midnight and belongs to the day it
    opened (``sat: ["22:00", "02:00"]``); a day left out (or ``null``) is closed; no
    ``opening_hours``: every day is open 24 hours. ``entrance_lines`` (``camera_id/line_id``):
    the lines whose ``in`` crossings are visitors; default every line.

    ``occupancy_reset``: when the live occupancy (each camera's and the store's) and the in/out totals shown
    with it (``/v1/occupancy``, ``/v1/live``, the ``store_occupancy`` alert) restart from 0 each day, so a missed
    exit does not stay in the number for ever: a local time ``"HH:MM"`` (default ``"04:00"``: a night hour when
    nearly every store is closed and empty), ``"closing"`` (each day's closing time of ``opening_hours``, a closed
    day none; without ``opening_hours``, or with no open day at all, local midnight) or ``null`` (never). People
    who leave after the reset count as outs of the new day, so pick a time when the store is empty (after the
    staff left): a store open at 04:00 sets its own. Frame times decide
    (:class:`~storelens.domain.counting.OccupancyReset`); the history (crossings, counts) is never changed.
    """

    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    name: str = ""
    #: The store's region in the chain roll-up (``GET /v1/chain/kpis?group_by=region``); ``""``: none.
    region: Annotated[str, Field(pattern=r"^[A-Za-z0-9._ -]*$", max_length=100)] = ""
    timezone: str = "UTC"
    opening_hours: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], tuple[str, str] | None] | None = None
    entrance_lines: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")]] | None = None
    occupancy_reset: str | None = "04:00"

    @field_validator("timezone")
    @classmethod
    def _iana(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r} (e.g. Europe/Berlin, America/New_York)") from None
        return v

    @field_validator("opening_hours")
    @classmethod
    def _hours(cls, v):
        for day, hours in (v or {}).items():
            if hours is None:
                continue
            try:
                o, c = parse_hhmm(hours[0]), parse_hhmm(hours[1], allow_24=True)
            except ValueError as exc:
                raise ValueError(f"{day}: {exc}") from None
            if o == c:
                raise ValueError(f"{day}: opening and closing time are the same ({hours[0]})")
        return v

    @field_validator("occupancy_reset")
    @classmethod
    def _reset(cls, v: str | None) -> str | None:
        if v is not None and v != "closing":
            try:
                parse_hhmm(v)
            except ValueError as exc:
                raise ValueError(f"{exc}, \"closing\" or null") from None
        return v

    def occupancy_reset_at(self) -> int | Literal["closing"] | None:
        """``occupancy_reset`` as minutes after local midnight, ``"closing"`` or ``None`` (never)."""
        if self.occupancy_reset is None:
            return None
        return "closing" if self.occupancy_reset == "closing" else parse_hhmm(self.occupancy_reset)

    def opening_minutes(self) -> dict[int, tuple[int, int]] | None:
        """Opening hours as weekday (0 = Monday) -> (open, close) minutes after midnight (``None``: always open)."""
        if self.opening_hours is None:
            return None
        return {WEEKDAY_KEYS.index(d): (parse_hhmm(h[0]), parse_hhmm(h[1], allow_24=True))
                for d, h in self.opening_hours.items() if h is not None}


class LineConfig(Strict):
    """A counting line from ``a`` to ``b`` in source pixel coordinates.

    Crossing from the left-hand side of A->B to its right-hand side (image
    coordinates, y down) counts as ``in``: for A=(0,300), B=(640,300), moving
    down the image is ``in``.
    """

    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    a: Point
    b: Point

    @field_validator("a", "b", mode="before")
    @classmethod
    def _point(cls, v: object) -> object:
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError("must be two numbers [x, y]")
        return v

    @model_validator(mode="after")
    def _not_degenerate(self) -> "LineConfig":
        if self.a == self.b:
            raise ValueError(f"line {self.id!r}: a and b are the same point")
        return self


#: How a ``Frame`` carries its image (:func:`storelens.backends.video.encode_frame`).
FrameFormat = Literal["bgr", "jpeg"]
ZoneKind = Literal["area", "entrance", "queue", "shelf", "staff_only", "exclude"]
#: The point of a box that stands for the person: the feet (``bottom_center``) or the box centre.
AnchorName = Literal["bottom_center", "center"]
NonNegMs = Annotated[int, Field(ge=0)]
#: Default ``lost_after_ms`` of zones: how long the default tracker (``bytereid``, ``track_buffer`` 60 frames
#: at 25 fps, the same time at any frame rate) keeps a lost track re-findable under its id. A site file with the
#: ``bytereid`` tracker gets its own tracker's window instead (:meth:`SiteConfig._zones_lost_after_tracker`).
LOST_AFTER_MS = 2400


class ZoneRules(Strict):
    """The rule parameters of zones: site defaults (``zones:``), each overridable per zone.

    See :mod:`storelens.domain.zones` for what they do.
    """

    #: A track must be inside this long before its entry counts (the entry time is the first inside time).
    enter_after_ms: NonNegMs = 500
    #: Outside this long before the exit counts (dated at the first outside time).
    exit_after_ms: NonNegMs = 1000
    #: A track unseen while inside (hidden behind someone, missed by the detector) keeps its visit this long:
    #: back under the same id within it, the visit goes on (one visit, one dwell, still in the zone and the
    #: queue meanwhile); unseen for longer, it exits ``lost``, dated at its last seen time. Unset: the
    #: tracker's re-find window (``bytereid``: ``tracker.track_buffer`` / ``tracker.fps``, 2400 ms by default;
    #: other trackers, or ``None``: :data:`LOST_AFTER_MS`), or ``exit_after_ms`` if longer.
    #: At least ``exit_after_ms``.
    lost_after_ms: NonNegMs | None = None
    anchor: AnchorName = "bottom_center"
    #: A ``loiter`` event once per visit when its dwell reaches this (0: off).
    loiter_after_s: Annotated[float, Field(ge=0)] = 60.0
    #: ``shelf`` zones: a visit that lasts this long is a stopper, shorter ones passers-by.
    stopper_after_s: Annotated[float, Field(ge=0)] = 3.0

    @model_validator(mode="after")
    def _lost_not_before_exit(self) -> "ZoneRules":
        problem = lost_after_problem(self.lost_after_ms, self.exit_after_ms)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def lost_ms(self) -> int:
        """How long a track unseen inside keeps its visit: ``lost_after_ms``, or its default (see there)."""
        return self.lost_after_ms if self.lost_after_ms is not None else max(LOST_AFTER_MS, self.exit_after_ms)


def lost_after_problem(lost_after_ms: int | None, exit_after_ms: int) -> str | None:
    """Why ``lost_after_ms`` cannot go with ``exit_after_ms`` (shorter), or ``None``."""
    if lost_after_ms is not None and lost_after_ms < exit_after_ms:
        return (f"lost_after_ms ({lost_after_ms}) must be >= exit_after_ms ({exit_after_ms}): a track "
                f"unseen inside cannot be lost before a track seen outside has left")
    return None


class ZonesConfig(ZoneRules):
    """The ``zones:`` section of the site file: defaults of :class:`ZoneRules` for every zone."""

    #: Window of the queue statistics (service rate, abandonments) of ``queue`` zones.
    queue_window_s: Annotated[float, Field(gt=0)] = 300.0
    #: Length of the per-zone statistics buckets (visits, occupancy, dwell) in the history.
    bucket_s: Annotated[int, Field(ge=1, le=86_400)] = 60


def _orient(a: Point, b: Point, c: Point) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _edges_touch(p: Point, q: Point, r: Point, s: Point) -> bool:
    """Whether segments P-Q and R-S share a point (collinear overlaps included)."""
    o = [_orient(p, q, r), _orient(p, q, s), _orient(r, s, p), _orient(r, s, q)]
    if o[0] * o[1] < 0 and o[2] * o[3] < 0:
        return True
    boxes = ((p, q, r), (p, q, s), (r, s, p), (r, s, q))
    return any(v == 0 and min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])
               for v, (a, b, c) in zip(o, boxes))


def polygon_problem(poly: list[Point]) -> str | None:
    """Why ``poly`` is not a simple polygon (repeated vertex, edges crossing, no area), or ``None``.

    Example:
        >>> polygon_problem([(0, 0), (100, 100), (100, 0), (0, 100)])
        'self-intersecting (edges 0 and 2 cross)'
    """
    n = len(poly)
    if len(set(poly)) < n:
        return "repeated vertex"
    for k, v in enumerate(poly):
        prev, nxt = poly[k - 1], poly[(k + 1) % n]
        if _orient(prev, v, nxt) == 0 and (prev[0] - v[0]) * (nxt[0] - v[0]) + (prev[1] - v[1]) * (nxt[1] - v[1]) > 0:
            return f"self-intersecting (it folds back on itself at vertex {k})"
    for i in range(n):
        for j in range(i + 2, n - (i == 0)):  # non-adjacent edges only
            if _edges_touch(poly[i], poly[(i + 1) % n], poly[j], poly[(j + 1) % n]):
                return f"self-intersecting (edges {i} and {j} cross)"
    area2 = sum(poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1] for i in range(n))
    if area2 == 0:
        return "no area (all points on one line)"
    return None


def _on_boundary(pt: Point, poly: list[Point], tol: float = 2.0) -> bool:
    for i, a in enumerate(poly):
        b = poly[(i + 1) % len(poly)]
        dx, dy = b[0] - a[0], b[1] - a[1]
        t = max(0.0, min(1.0, ((pt[0] - a[0]) * dx + (pt[1] - a[1]) * dy) / (dx * dx + dy * dy)))
        if math.hypot(a[0] + t * dx - pt[0], a[1] + t * dy - pt[1]) <= tol:
            return True
    return False


class ZoneConfig(Strict):
    """A polygon (source pixel coordinates) with a kind and, optionally, its own rule parameters.

    * ``service_edge`` (``queue`` only, required there): the edge people leave
      through when served, as two adjacent vertex indices ``[i, j]`` or two points
      ``[[x, y], [x, y]]`` on the polygon's boundary (within 2 px);
    * ``product`` / ``category`` (``shelf`` only): labels for product interest;
    * ``enter_after_ms`` ... ``stopper_after_s``: override the site's ``zones:`` defaults
      (``stopper_after_s`` on ``shelf`` zones only; ``exclude`` zones take only ``anchor``).

    Example:
        >>> z = ZoneConfig(id="till", kind="queue", polygon=[(0, 0), (100, 0), (100, 50), (0, 50)],
        ...                service_edge=(1, 2), exit_after_ms=400)
        >>> z.service_segment
        ((100.0, 0.0), (100.0, 50.0))
        >>> z.rules(ZonesConfig()).exit_after_ms, z.rules(ZonesConfig()).enter_after_ms
        (400, 500)
    """

    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    polygon: Annotated[list[Point], Field(min_length=3)]
    kind: ZoneKind = "area"
    service_edge: tuple[int, int] | tuple[Point, Point] | None = Field(default=None, validate_default=True)
    product: str | None = None
    category: str | None = None
    enter_after_ms: NonNegMs | None = None
    exit_after_ms: NonNegMs | None = None
    lost_after_ms: NonNegMs | None = None
    anchor: AnchorName | None = None
    loiter_after_s: Annotated[float, Field(ge=0)] | None = None
    stopper_after_s: Annotated[float, Field(ge=0)] | None = None

    @field_validator("polygon", mode="before")
    @classmethod
    def _points(cls, v: object) -> object:
        if isinstance(v, (list, tuple)) and any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in v):
            raise ValueError("must be a list of points [x, y]")
        return v

    @field_validator("polygon")
    @classmethod
    def _simple(cls, v: list[Point]) -> list[Point]:
        problem = polygon_problem(v)
        if problem:
            raise ValueError(f"not a simple polygon: {problem}")
        return v

    @field_validator("service_edge", mode="before")
    @classmethod
    def _edge_shape(cls, v: object) -> object:
        def num(x: object) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool)

        if v is None or (isinstance(v, (list, tuple)) and len(v) == 2 and (
                all(isinstance(i, int) and not isinstance(i, bool) for i in v)
                or all(isinstance(p, (list, tuple)) and len(p) == 2 and all(map(num, p)) for p in v))):
            return v
        raise ValueError("must be two vertex indices [i, j] or two points [[x, y], [x, y]]")

    @field_validator("service_edge")
    @classmethod
    def _service_edge(cls, v, info: ValidationInfo):
        kind, poly = info.data.get("kind"), info.data.get("polygon")
        if kind is None or poly is None:
            return v  # kind or polygon already failed
        if kind != "queue":
            if v is not None:
                raise ValueError(f"only queue zones have a service edge (this zone is {kind!r})")
            return v
        if v is None:
            raise ValueError("required for a queue zone: the polygon edge people leave through when served")
        n = len(poly)
        if isinstance(v[0], int):
            i, j = v
            if not (0 <= i < n and 0 <= j < n):
                raise ValueError(f"vertex indices must be in 0..{n - 1}")
            if (j - i) % n not in (1, n - 1):
                raise ValueError(f"vertices {i} and {j} are not the ends of one polygon edge")
        else:
            if v[0] == v[1]:
                raise ValueError("the two points are the same")
            if not all(_on_boundary(p, poly) for p in v):
                raise ValueError("both points must lie on the polygon's boundary (within 2 px)")
        return v

    @field_validator("product", "category")
    @classmethod
    def _shelf_only(cls, v, info: ValidationInfo):
        if v is not None and info.data.get("kind", "shelf") != "shelf":
            raise ValueError(f"only shelf zones have a {info.field_name} (this zone is {info.data['kind']!r})")
        return v

    @field_validator("enter_after_ms", "exit_after_ms", "lost_after_ms", "loiter_after_s", "stopper_after_s")
    @classmethod
    def _applies(cls, v, info: ValidationInfo):
        kind = info.data.get("kind")
        if v is not None and kind == "exclude":
            raise ValueError("exclude zones take no rule parameters except anchor")
        if v is not None and info.field_name == "stopper_after_s" and kind not in (None, "shelf"):
            raise ValueError(f"only shelf zones have stoppers (this zone is {kind!r})")
        return v

    @property
    def service_segment(self) -> tuple[Point, Point] | None:
        """The service edge as two points, or ``None`` (not a queue)."""
        e = self.service_edge
        if e is None:
            return None
        if isinstance(e[0], int):
            return (self.polygon[e[0]], self.polygon[e[1]])
        return (tuple(e[0]), tuple(e[1]))

    def rules(self, defaults: ZoneRules) -> ZoneRules:
        """This zone's rule parameters: its own where set, the site's ``zones:`` defaults elsewhere (a
        ``lost_after_ms`` set nowhere, the tracker's window, is never below the zone's ``exit_after_ms``)."""
        own = {k: getattr(self, k) for k in ZoneRules.model_fields if getattr(self, k) is not None}
        rules = {**{k: getattr(defaults, k) for k in ZoneRules.model_fields}, **own}
        if self.lost_after_ms is None and "lost_after_ms" not in defaults.model_fields_set \
                and rules["lost_after_ms"] is not None:
            rules["lost_after_ms"] = max(rules["lost_after_ms"], rules["exit_after_ms"])
        return ZoneRules(**rules)


class CameraConfig(Strict):
    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    #: Video file path, ``rtsp://``/``http(s)://`` URL, a webcam index like ``"0"`` or a V4L2 device like
    #: ``/dev/video0`` (live: :func:`storelens.backends.video.is_live`).
    source: Annotated[str, Field(min_length=1)]
    #: Frames per second to sample; ``None`` keeps every frame of the source.
    target_fps: Annotated[float | None, Field(gt=0)] = None
    #: Width of the published JPEG (height keeps the aspect ratio); ``None`` keeps the source size.
    resize_width: Annotated[int | None, Field(ge=32, le=8192)] = None
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 90
    #: Timestamp of a file's first frame (ms since epoch); frames of files are stamped
    #: ``start_ts_ms + position``, so runs are reproducible.
    start_ts_ms: Annotated[int, Field(ge=0)] = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    lines: list[LineConfig] = []
    zones: list[ZoneConfig] = []
    #: Optional homography onto the store plan (floor heatmaps, distances and speeds in metres).
    floor: CameraFloorConfig | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> "CameraConfig":
        for kind, items in (("line", self.lines), ("zone", self.zones)):
            ids = [i.id for i in items]
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ValueError(f"duplicate {kind} id(s) {sorted(dup)} in camera {self.id!r}")
        return self


#: A faces track is ended after no crop for at least this many of its camera's crop intervals
#: (:meth:`SiteConfig.face_track_idle_s`).
IDLE_CROP_INTERVALS = 3


class CropsConfig(Strict):
    """Person crops that detect-track publishes for the faces stages."""

    #: Publish a crop of each track at most every N of its frames (0: never).
    every_n_frames: Annotated[int, Field(ge=0)] = 10
    #: Skip people smaller than this (their faces are unusable).
    min_height_px: Annotated[int, Field(ge=1)] = 96
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 90


class CountingConfig(Strict):
    #: Distance (px) the anchor must reach beyond a line before a crossing counts;
    #: people standing on the line and jitter never count.
    hysteresis_px: Annotated[float, Field(ge=0)] = 6.0
    #: ... or this many of the box's heights when that is more (callers that give box sizes: the pipeline), so
    #: the dead zone grows with the person's size in the image: the feet of someone standing on the line wobble
    #: with the box (+-8 px for a 400 px box of a 1080p camera), more than ``hysteresis_px``. A track's first
    #: side needs only ``hysteresis_px``. 0 turns it off; every TUD and CAVIAR count of the tests holds up to 0.06.
    hysteresis_heights: Annotated[float, Field(ge=0)] = 0.05
    #: A new track starting within this radius and time of where a lost track ended inherits its line state
    #: (lost-and-re-acquired tracks). The radius is in the lost track's box heights, so it means the same at
    #: any image size and distance from the camera; ``reacquire_radius_px`` applies only to callers that give
    #: no box sizes.
    reacquire_radius_heights: Annotated[float, Field(ge=0)] = 0.35
    reacquire_radius_px: Annotated[float, Field(ge=0)] = 60.0
    #: A step whose box height changes by more than this factor is not one person walking (a box that
    #: snapped from a person to a mannequin, or grew over two objects): it never counts a crossing, and the
    #: track's side of each line restarts from where it now is.
    max_height_ratio: Annotated[float, Field(gt=1)] = 1.75
    #: Nor does a step of more than ``max_step_heights`` box heights plus ``max_speed_heights_per_s`` per
    #: second since the track was last seen (people walk ~0.8 heights a second, run under 2).
    max_step_heights: Annotated[float, Field(ge=0)] = 0.2
    max_speed_heights_per_s: Annotated[float, Field(ge=0)] = 2.0
    #: Nor does a step longer than ``max_step_heights`` in which the box itself moved less than this share of
    #: its anchor's move: the anchor (the box's bottom) moved because the box grew or shrank at that edge,
    #: with its top edge staying (a passer-by's box merged with a mannequin's, legs hidden or shown again).
    #: The box's own move is, vertically, the smaller of its top and bottom edges' moves when both go the same
    #: way (0 otherwise), and horizontally the anchor's. A new id on such a box inherits no lost track either.
    #: Assumes a camera above people's heads: walking towards it moves the head by about (camera height - 1.7 m)
    #: / camera height of the feet's move, 0.25 and more from ~2.3 m up; lower it for cameras at head height.
    #: 0 turns this off.
    min_box_move_share: Annotated[float, Field(ge=0, le=1)] = 0.25
    #: A lost track's state is handed to a *new* id (an id switch) only within this time of its last sighting.
    reacquire_window_ms: Annotated[int, Field(ge=0)] = 2000
    #: A lost track's side of each line is kept this long for the tracker to re-find the person under the *same*
    #: id (at least ``reacquire_window_ms``), so a person hidden at the door and re-found on its far side
    #: counts. Unset: the ``bytereid`` tracker's re-find window, ``track_buffer`` / ``fps`` (2400 ms with the
    #: defaults, 12000 with ``track_buffer: 60, fps: 5``; :meth:`SiteConfig._counting_refind_after_tracker`);
    #: other trackers: 2400.
    refind_window_ms: NonNegMs = LOST_AFTER_MS
    #: Tumbling window of the per-line counts.
    window_s: Annotated[int, Field(ge=1)] = 60


_PG_URL = re.compile(r"^\s*postgres(?:ql)?(?:\+psycopg)?://", re.IGNORECASE)

#: Why :func:`pg_url_unencoded` refused a DSN (without the DSN).
PG_URL_UNENCODED = ("a postgresql:// URL's user name and password must be percent-encoded: '@' as %40, '/' as %2F, "
                    "'?' as %3F, '#' as %23, '%' as %25 (or use the key=value form: host=... password=...)")


#: The hosts of a ``postgresql://`` URL as libpq reads them: ``host[:port]`` (a name, a percent-encoded socket
#: folder, or ``[IPv6]``), comma-separated.
_PG_HOSTS = re.compile(r"(?:\[[^\]]*\]|[^:,\[\]@]*)(?::\d*)?(?:,(?:\[[^\]]*\]|[^:,\[\]@]*)(?::\d*)?)*")


def pg_url_unencoded(dsn: str) -> bool:
    """``True`` for a ``postgresql://`` URL whose user-info part (``user:password@``) is not percent-encoded. As
    libpq reads it, the user info ends at the first ``@`` before any ``/``; refused: user info holding ``?``, ``#``
    or a ``%`` that starts no ``%XX`` (other URL readers end it there), an ``@`` in the hosts (a second ``@``), in
    the database (a ``/`` of the password ended the hosts early) or in a query parameter's name; and hosts that are
    no ``host[:port]`` list while an ``@`` follows. An ``@`` in a parameter's value is fine
    (``?user=admin@srv``, ``?sslrootcert=/etc/ssl/a@b.crt``). A libpq ``key=value`` DSN is never refused here.

    Example:
        >>> pg_url_unencoded("postgresql://u:ab/cd@db/x"), pg_url_unencoded("postgresql://u:ab%2Fcd@db/x")
        (True, False)
        >>> pg_url_unencoded("postgresql://db:5432/x?user=admin@srv&sslmode=require")
        False
    """
    m = _PG_URL.match(dsn)
    if m is None:
        return False
    rest = dsn[m.end():]
    end = re.search(r"[@/]", rest)
    if end is not None and end.group() == "@":  # libpq: the user info
        userinfo, rest = rest[:end.start()], rest[end.end():]
        if re.search(r"[?#]|%(?![0-9A-Fa-f]{2})", userinfo):
            return True
    hosts = re.split(r"[/?]", rest, maxsplit=1)[0]
    after = rest[len(hosts):]
    path, _, query = after.partition("?")
    if "@" in hosts or "@" in path:
        return True
    if any("@" in param.partition("=")[0] for param in query.split("&")):
        return True
    return "@" in after and not _PG_HOSTS.fullmatch(hosts)


class StorageConfig(Strict):
    """History: SQLite (embedded mode) or PostgreSQL (distributed mode)."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    #: SQLite file (backend ``sqlite``); relative: to the site file's folder (:data:`PATH_FIELDS`). Left out: this
    #: default in the working directory (the site file's folder may be read-only: /etc, a ConfigMap).
    path: str = "storelens.db"
    #: libpq connection string (backend ``postgres``), e.g.
    #: ``postgresql://storelens:${PGPASSWORD}@postgres:5432/storelens``; checked after ``${VAR}`` expansion: in
    #: a URL, a user name or password with ``@ / ? # %`` must be percent-encoded.
    dsn: str | None = None
    #: ``auto``: each process migrates the tables to its release's schema when it opens them (under a lock; the
    #: embedded mode). ``wait``: it never migrates; behind, it waits (``/readyz`` names the revision, ``/healthz``
    #: stays up) for ``storelens db upgrade`` (Kubernetes: the api's ``db-upgrade`` initContainer); newer than the
    #: release (a rollback): an error.
    migrate: Literal["auto", "wait"] = "auto"

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        """Refuse a PostgreSQL URL whose user name or password holds a character a URL reserves: libpq reads the
        rest as another host, port or database (and its errors show them); the message never shows the DSN."""
        if v is not None and pg_url_unencoded(v):
            raise ValueError(PG_URL_UNENCODED)
        return v

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> "StorageConfig":
        if self.backend == "postgres" and not self.dsn:
            raise ValueError("storage.dsn is required when storage.backend is 'postgres'")
        return self


class KafkaConfig(Strict):
    """The broker of the distributed mode (topics: ``storelens.contract.topics``)."""

    bootstrap_servers: Annotated[str, Field(min_length=1)] = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    #: Prefix of consumer group ids; each service appends its name.
    group_prefix: str = "storelens"
    #: Prefix of every topic name (e.g. ``store-berlin-01.``), so several stores
    #: (or test runs) can share one Kafka cluster without reading each other's data.
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]*$")] = ""
    #: Partitions and replication of the topics the services create at start when missing
    #: (:func:`storelens.runtime.kafka.ensure_topics`).
    partitions: Annotated[int, Field(ge=1)] = 6
    replication_factor: Annotated[int, Field(ge=1)] = 1


class LiveConfig(Strict):
    """Live state (occupancy, last seen per camera) in Redis, distributed mode."""

    #: ``redis://[user:password@]host[:port][/db]`` (or ``rediss://``, ``unix://``), checked after ``${VAR}``
    #: expansion: a password with a character a URL reserves (``/``, ``#``, ``?``) must be percent-encoded.
    redis_url: str | None = None
    #: Seconds the API waits for the live state: each read (past it, occupancy and zones answer from the history);
    #: each ping of ``/readyz`` and ``/metrics`` waits twice it (a reconnect, then the answer; past it,
    #: ``live_state`` is ``unavailable``).
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.5

    @field_validator("redis_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        """Refuse a URL that redis-py and ``limits`` would fail on (an uncaught ``ValueError`` whose traceback
        shows the start of the password) or read as another host or database, e.g. the password ``ab/cd`` in
        ``redis://u:ab/cd@h:6379/0``; the message never shows the URL."""
        if v is None:
            return v
        bad = ValueError("not a valid URL (redis://[user:password@]host[:port][/db], rediss:// or unix://); "
                         "a password must be URL-safe (percent-encode it)")
        try:
            parts = urllib.parse.urlsplit(v)
            parts.port  # noqa: B018 (raises ValueError when not a number)
        except ValueError:
            raise bad from None
        # An '@' after the host: the user name or password held a '/', '?' or '#' that ended the host early.
        if parts.scheme not in ("redis", "rediss", "unix") or "@" in parts.path + parts.query + parts.fragment:
            raise bad
        if parts.scheme != "unix" and not re.fullmatch(r"(/\d*)?", parts.path):  # the database number
            raise bad
        return v


class ApiConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    #: uvicorn worker processes (one Python process uses one core at most); more than 1 needs
    #: ``$STORELENS_JWT_SECRET`` so every worker accepts every session (see :mod:`storelens.api.server`).
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    #: How long the aggregate read routes' answers are reused for the same query (0: never); a write
    #: through this process drops them at once (see :mod:`storelens.api.cache`).
    cache_ttl_s: Annotated[float, Field(ge=0, le=1)] = 1.0
    #: Addresses (comma-separated IPs or CIDRs, ``*``: any) of the reverse proxies whose ``X-Forwarded-For``
    #: and ``X-Forwarded-Proto`` are believed: the client address of the sign-in rate limit and the audit log
    #: is the header's last entry outside them. Behind an Ingress set it to the controller's addresses (its pod
    #: network, as in ``k8s/``); else every client is the proxy, and 20 wrong sign-ins a minute from anyone lock
    #: everyone out. Not ``*`` (a warning at start): uvicorn then takes the header's first entry, the client's
    #: own when the proxy appends to the header; it is safe only behind a proxy that overwrites it.
    forwarded_allow_ips: str = "127.0.0.1"
    #: Environment variables a site edit through the API may name as ``${NAME}`` in a camera's source
    #: (shell-style patterns, matched case-sensitively), besides the variables the site in force already names
    #: in its cameras and alert rules (the site file's, e.g. ``${STORELENS_CAMERA_PASSWORD}``, or an imported
    #: version's); a new template anywhere else is refused too (:func:`check_edit_env`). Any other name is a 422
    #: that does not say whether it is set: every process expands a version's templates with its own
    #: environment, so an admin could otherwise read e.g. ``${DB_PASSWORD}`` off the site. An allowed variable
    #: may be sent to whatever camera host an admin writes: list only camera credentials. The site file and
    #: ``storelens site import`` (the operator's) may name any variable anywhere.
    site_env_allowlist: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_*?\[\]!-]+$")]] = [
        "CAM_*", "STORELENS_CAMERA_*", "STORELENS_ASSETS"]
    #: Largest request body (bytes) the API reads: above it 413, before the body is parsed or the caller signed in
    #: (``Content-Length``, else counted as it arrives). The largest legitimate body, 1000 transactions, is ~200 kB.
    max_body_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 1 << 20


class IngestConfig(Strict):
    """How ingest (both modes) reopens a live source (RTSP, HTTP, webcam) that is missing, drops, or opens but
    gives no frame (:func:`~storelens.backends.video.read_live_frames`)."""

    #: Wait before a reopen; doubled after each reopen that gave no frame, back to this once a frame was read.
    reconnect_backoff_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    #: The longest wait between two reopens.
    reconnect_backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _max_not_below(self) -> "IngestConfig":
        if self.reconnect_backoff_max_s < self.reconnect_backoff_s:
            raise ValueError("reconnect_backoff_max_s must not be below reconnect_backoff_s")
        return self


class PipelineConfig(Strict):
    """How the embedded mode (one process, :mod:`storelens.runtime.embedded`) runs its stages."""

    #: Frames of up to this many cameras that wait for detect-track at once go through it together:
    #: one detector call and one re-id inference for all of them (1: one frame at a time). Results are
    #: the same either way. The distributed services always take one frame at a time.
    batch_cameras: Annotated[int, Field(ge=1, le=64)] = 8
    #: How ingest hands frames to detect-track inside the process. ``jpeg`` (the default): the services'
    #: own encoding, so both modes track the same pixels and give the same results. ``bgr``: raw pixels,
    #: no JPEG encode and decode (~3 ms of CPU a 960x540 frame); the detector then sees the source's
    #: pixels, and tracks differ from the services' (on the visible sequences, IDF1 moved by -0.06 to
    #: +0.06 and one CAVIAR clip gained a wrong crossing; BENCHMARKS.md). Kafka always carries JPEG.
    frames: FrameFormat = "jpeg"


class SiteConfig(Strict):
    store: StoreConfig
    #: At least one, except in a chain's roll-up deployment (``chain:``), which has none.
    cameras: list[CameraConfig]
    #: One class per backend, chosen by ``backend`` (see :mod:`storelens.config.base`). With the
    #: ``bytereid`` tracker (the default) an unset ``detector.confidence`` is the tracker's
    #: ``track_low_thresh`` (0.1), so its second stage sees the low-score detections.
    detector: SerializeAsAny[DetectorConfig] = Field(default_factory=DetectorConfig)
    tracker: SerializeAsAny[TrackerConfig] = Field(default_factory=TrackerConfig)
    crops: CropsConfig = Field(default_factory=CropsConfig)
    counting: CountingConfig = Field(default_factory=CountingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)
    #: Defaults of the zone rules (each zone may override them).
    zones: ZonesConfig = Field(default_factory=ZonesConfig)
    heatmap: HeatmapConfig = Field(default_factory=HeatmapConfig)
    #: The store plan the cameras' ``floor`` homographies map onto (optional).
    floor_plan: FloorPlanConfig | None = None
    journeys: JourneysConfig = Field(default_factory=JourneysConfig)
    stationary: StationaryConfig = Field(default_factory=StationaryConfig)
    #: Alert rules (see :mod:`storelens.config.alerts`).
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    #: k-anonymity of the aggregates and retention of personal data (see :mod:`storelens.config.privacy`).
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    #: Sign-in and roles of the API (see :mod:`storelens.config.auth`).
    auth: AuthConfig = Field(default_factory=AuthConfig)
    #: Buying units: people crossing a line together (see :mod:`storelens.config.groups`).
    groups: GroupsConfig = Field(default_factory=GroupsConfig)
    #: Who counts as staff: staff-only zones, a uniform colour (see :mod:`storelens.config.groups`).
    staff: StaffConfig = Field(default_factory=StaffConfig)
    #: The counting accuracy audit (``storelens audit``, see :mod:`storelens.config.audit`).
    audit: AuditConfig = Field(default_factory=AuditConfig)
    rollup: RollupConfig = Field(default_factory=RollupConfig)
    #: Set only in a chain's roll-up deployment (no cameras of its own).
    chain: ChainConfig | None = None
    #: The document this site was parsed from, ``${VAR}`` templates unexpanded (``None``: built directly):
    #: what :func:`site_version_document` and :func:`written_document` put the templates back from.
    _written: dict | None = PrivateAttr(default=None)
    #: The values (``model_dump(mode="json")``) ``_written``'s templates gave: a template is put back only where
    #: the config still holds that value (a ``model_copy(update=...)`` since cannot bring an old value back).
    _written_gave: dict | None = PrivateAttr(default=None)
    #: The folder relative paths were resolved against (the site file's; the working directory for a document
    #: parsed without one): :func:`with_cameras` resolves the cameras it is given against it too.
    _base: pathlib.Path | None = PrivateAttr(default=None)
    #: ``False``: read for a command that never opens its cameras (``storelens site export``, ``users``, ...): a
    #: ``${VAR}`` under ``cameras`` whose variable is not set stays as written, here and in :func:`with_cameras`.
    _open_cameras: bool = PrivateAttr(default=True)
    #: The site file's ``journeys.links``, all of them (``None``: those in force): :func:`with_cameras` puts in
    #: force those whose cameras the version has, so a camera a version brings back brings its links back.
    _file_links: list | None = PrivateAttr(default=None)
    #: The site file's ``store.entrance_lines``, all of them (``None``: those of ``store``): what every reader
    #: counts with (:func:`entrance_lines_of`); ``store.entrance_lines`` of a site version holds only those whose
    #: camera line it has, so that it validates (:func:`_entrance_lines_in_version`).
    _file_entrance_lines: list | None = PrivateAttr(default=None)

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        ids = [c.id for c in cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate camera id(s) {dup}")
        return cameras

    @model_validator(mode="after")
    def _some_camera(self) -> "SiteConfig":
        if not self.cameras and self.chain is None:
            raise ValueError("cameras: at least 1 camera is needed (only a chain's roll-up, `chain:`, has none)")
        return self

    @model_validator(mode="after")
    def _faces_get_crops(self) -> "SiteConfig":
        """The faces stages work on person crops: ``faces.enabled`` with ``crops.every_n_frames: 0`` (no crop is
        ever made) would load the face models and produce nothing, without a word."""
        if self.faces.enabled and not self.crops.every_n_frames:
            raise ValueError("faces.enabled needs person crops, but crops.every_n_frames is 0 (no crop is made): "
                             "set crops.every_n_frames (default 10) or faces.enabled: false")
        return self

    @model_validator(mode="after")
    def _detector_down_to_tracker(self) -> "SiteConfig":
        """The bytereid tracker's low stage needs detections down to ``track_low_thresh``:
        a ``detector.confidence`` the site file does not set follows it (a set one is kept).

        Example:
            >>> site = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}
            >>> SiteConfig.model_validate(site).detector.confidence
            0.1
            >>> SiteConfig.model_validate({**site, "tracker": {"track_low_thresh": 0.2}}).detector.confidence
            0.2
            >>> SiteConfig.model_validate({**site, "tracker": {"backend": "deepsort"}}).detector.confidence
            0.35
        """
        low = self.tracker.track_low_thresh if isinstance(self.tracker, ByteReidTrackerConfig) else None
        if low is not None and "confidence" in type(self.detector).model_fields:
            follow_unset(self, "detector", "confidence", low)
        return self

    @model_validator(mode="after")
    def _entrance_lines_exist(self) -> "SiteConfig":
        """Each ``store.entrance_lines`` entry names a line of a camera of the site (the site file's check:
        :func:`with_cameras` leaves out of ``store`` the entrance lines a site version removed before it validates;
        the readers still count with the file's, :func:`entrance_lines_of`)."""
        known = {f"{c.id}/{ln.id}" for c in self.cameras for ln in c.lines}
        missing = [x for x in self.store.entrance_lines or () if x not in known]
        if missing:
            raise ValueError(f"store.entrance_lines: no such camera line(s) {missing}")
        return self

    @model_validator(mode="after")
    def _journey_links_exist(self) -> "SiteConfig":
        """Each ``journeys.links`` entry names cameras of the site (the site file's check: :func:`with_cameras`
        leaves out the links of cameras a site version removed before it validates)."""
        known = {c.id for c in self.cameras}
        for i, link in enumerate(self.journeys.links):
            for name, cam in (("from", link.source), ("to", link.target)):
                if cam not in known:
                    raise ValueError(f"journeys.links.{i}.{name}: no such camera {cam!r}")
        return self

    @model_validator(mode="after")
    def _zones_lost_after_tracker(self) -> "SiteConfig":
        """An unset ``zones.lost_after_ms`` follows the ``bytereid`` tracker's re-find window,
        ``track_buffer`` frames at ``fps`` (the time it keeps at any camera frame rate), or ``exit_after_ms``
        if longer: a visit is not split while the tracker still holds the hidden person.

        Example:
            >>> site = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}
            >>> SiteConfig.model_validate(site).zones.lost_after_ms
            2400
            >>> SiteConfig.model_validate({**site, "tracker": {"track_buffer": 60, "fps": 5}}).zones.lost_after_ms
            12000
        """
        if isinstance(self.tracker, ByteReidTrackerConfig):
            follow_unset(self, "zones", "lost_after_ms", max(self.tracker.refind_ms, self.zones.exit_after_ms))
        return self

    @model_validator(mode="after")
    def _counting_refind_after_tracker(self) -> "SiteConfig":
        """An unset ``counting.refind_window_ms`` follows the ``bytereid`` tracker's re-find window (as
        ``zones.lost_after_ms`` does): a person the tracker re-finds under the same id keeps their side of the lines.

        Example:
            >>> site = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}
            >>> SiteConfig.model_validate(site).counting.refind_window_ms
            2400
            >>> SiteConfig.model_validate({**site, "tracker": {"track_buffer": 60, "fps": 5}}).counting.refind_window_ms
            12000
        """
        if isinstance(self.tracker, ByteReidTrackerConfig):
            follow_unset(self, "counting", "refind_window_ms", self.tracker.refind_ms)
        return self

    @model_validator(mode="after")
    def _zones_lost_after_exit(self) -> "SiteConfig":
        """A zone's ``lost_after_ms`` set in the file (its own or the ``zones:`` default) is at least its
        ``exit_after_ms`` (an unset one, the tracker's window, is raised to it: :meth:`ZoneConfig.rules`)."""
        zones_set = "lost_after_ms" in self.zones.model_fields_set
        for i, cam in enumerate(self.cameras):
            for j, z in enumerate(cam.zones):
                if z.kind == "exclude":
                    continue
                lost = z.lost_after_ms if z.lost_after_ms is not None else (
                    self.zones.lost_after_ms if zones_set else None)
                problem = lost_after_problem(lost, z.exit_after_ms if z.exit_after_ms is not None
                                             else self.zones.exit_after_ms)
                if problem:
                    where = "" if z.lost_after_ms is not None else " (from zones.lost_after_ms)"
                    raise ValueError(f"cameras.{i}.zones.{j}.lost_after_ms{where}: {problem}")
        return self

    @model_validator(mode="after")
    def _alert_targets_exist(self, info: ValidationInfo) -> "SiteConfig":
        # a stored site version (with_site_update) is not refused for a rule that only never fires: such rules were
        # taken before, and with_cameras leaves them out with a warning
        stored = bool(info.context and info.context.get(STORED_VERSION))
        zones = {c.id: {z.id: z.kind for z in c.zones if z.kind != "exclude"} for c in self.cameras}
        for i, rule in enumerate(self.alerts.rules):
            if rule.camera is None:  # store-wide rules
                continue
            if rule.camera not in zones:
                raise ValueError(f"alerts.rules.{i}.camera: no such camera {rule.camera!r} (rule {rule.id!r})")
            if rule.zone is not None and rule.zone not in zones[rule.camera]:
                raise ValueError(f"alerts.rules.{i}.zone: camera {rule.camera!r} has no zone {rule.zone!r} "
                                 f"(rule {rule.id!r})")
            if rule.kind == "queue_wait" and zones[rule.camera][rule.zone] != "queue":
                raise ValueError(f"alerts.rules.{i}.zone: zone {rule.zone!r} of camera {rule.camera!r} is a "
                                 f"{zones[rule.camera][rule.zone]!r} zone, queue_wait needs a 'queue' zone "
                                 f"(rule {rule.id!r})")
            problem = None if stored else self._never_fires(i)
            if problem:
                raise ValueError(problem)
        return self

    def _never_fires(self, i: int) -> str | None:
        """Why alert rule ``i`` (its camera and zone exist) would never fire, or ``None``: a ``loitering`` rule on a
        zone whose ``loiter_after_s`` is 0 (no loiter event)."""
        rule = self.alerts.rules[i]
        if rule.kind != "loitering":
            return None
        zone = next(z for z in self.camera(rule.camera).zones if z.id == rule.zone)
        if zone.rules(self.zones).loiter_after_s != 0:
            return None
        where = "its loiter_after_s" if zone.loiter_after_s is not None else "zones.loiter_after_s"
        return (f"alerts.rules.{i}.zone: zone {rule.zone!r} of camera {rule.camera!r} has loiter_after_s 0 ({where}: "
                f"loiter events off), so the loitering rule {rule.id!r} would never fire; set loiter_after_s > 0 or "
                f"remove the rule")

    def camera(self, camera_id: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        raise KeyError(camera_id)

    def face_track_idle_s(self, camera_id: str) -> float:
        """How long (camera time) a track of ``camera_id`` may go without a person crop before the faces stages end
        it: ``faces.reid.track_idle_s``, or :data:`IDLE_CROP_INTERVALS` crop intervals of the camera
        (``crops.every_n_frames`` / ``target_fps``) if longer, so a camera sampled slowly still gets
        ``faces.reid.faces_per_decision`` faces per track instead of one decision per crop. A camera without
        ``target_fps`` (every frame of its source, at a rate the config does not know) or an unknown camera:
        ``track_idle_s``.

        Example:
            >>> site = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", "target_fps": 1}]}
            >>> SiteConfig.model_validate(site).face_track_idle_s("c")  # a crop every 10 s: 3 of them
            30.0
            >>> SiteConfig.model_validate({**site, "crops": {"every_n_frames": 2}}).face_track_idle_s("c")
            10.0
        """
        idle = self.faces.reid.track_idle_s
        try:
            fps = self.camera(camera_id).target_fps
        except KeyError:
            return idle
        if fps is None or not self.crops.every_n_frames:
            return idle
        return max(idle, IDLE_CROP_INTERVALS * self.crops.every_n_frames / fps)


def _expand(obj: object, origin: str, loc: str = "", open_cameras: bool = True, keep_unset: bool = False) -> object:
    """``obj`` with its ``${VAR}`` templates expanded; :class:`ConfigError` naming the field of an unset variable,
    except under ``cameras`` when not ``open_cameras``, and anywhere with ``keep_unset`` (the template stays as
    written)."""
    if isinstance(obj, str):
        try:
            return expand_env(obj, keep_unset=keep_unset or not open_cameras and loc.split(".", 1)[0] == "cameras")
        except ConfigError as exc:
            raise ConfigError(f"config error in {origin}: {loc or '(top level)'}: {exc}") from None
    if isinstance(obj, list):
        return [_expand(v, origin, f"{loc}.{i}" if loc else str(i), open_cameras, keep_unset)
                for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return {k: _expand(v, origin, f"{loc}.{k}" if loc else str(k), open_cameras, keep_unset)
                for k, v in obj.items()}
    return obj


#: The field of a camera's source, as :func:`_templates` names it.
_SOURCE = re.compile(r"cameras\.\d+\.source")


def _templates(obj: object, loc: str = "") -> list[tuple[str, str]]:
    """``(field, value)`` of each string of ``obj`` holding a ``${VAR}`` template (fields named as :func:`_expand`
    names them)."""
    if isinstance(obj, str):
        return [(loc, obj)] if has_template(obj) else []
    if isinstance(obj, list):
        return [t for i, v in enumerate(obj) for t in _templates(v, f"{loc}.{i}" if loc else str(i))]
    if isinstance(obj, dict):
        return [t for k, v in obj.items() for t in _templates(v, f"{loc}.{k}" if loc else str(k))]
    return []


def check_edit_env(config: SiteConfig, cameras: list, alert_rules: list | None = None,
                   origin: str = "the site") -> None:
    """Refuse (:class:`ConfigError`) a site edit through the API (``cameras``, ``alert_rules``: dicts as written)
    with a ``${VAR}`` template the site in force (``config``) does not hold already, unless it is in a camera's
    ``source`` and names only variables of ``api.site_env_allowlist`` or variables the site's cameras and alert
    rules already name (:func:`site_version_document`). Checked before :func:`with_cameras` expands anything,
    so the answer never depends on whether a variable is set; a template elsewhere (a zone's product, a rule)
    would show its value to every role through other routes.

    Example:
        >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "rtsp://u:${OWN_PW:-x}@h/"}]})
        >>> check_edit_env(cfg, [{"id": "c", "source": "rtsp://u:${OWN_PW}@h/${CAM_PATH}"}])  # in use, allowlisted
        >>> check_edit_env(cfg, [{"id": "c", "source": "rtsp://evil/${DB_PASSWORD}"}])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        storelens.errors.ConfigError: config error in the site: cameras.0.source: ${DB_PASSWORD} may not be ...
    """
    base = site_version_document(config)
    held = _templates(base)
    in_use = {name for _, value in held for name in template_names(value)}
    kept = {value for loc, value in held if not _SOURCE.fullmatch(loc)}  # outside camera sources
    patterns = config.api.site_env_allowlist
    edited = _templates(cameras, "cameras") + (_templates(alert_rules, "alerts.rules") if alert_rules else [])
    for loc, value in edited:
        if value in kept:
            continue  # as the site holds it (an edit merges into the version in force as written)
        if not _SOURCE.fullmatch(loc):
            raise ConfigError(f"config error in {origin}: {loc}: a ${{VAR}} template may only be in a camera's "
                              f"source in a site edit through the API (the site file may have one anywhere)")
        for name in template_names(value):
            if name not in in_use and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                raise ConfigError(
                    f"config error in {origin}: {loc}: ${{{name}}} may not be used in a site edit through the API "
                    f"(allowed: the variables the site already uses, and api.site_env_allowlist: "
                    f"{', '.join(patterns) or 'none'}); the site file may name any variable")


def masked(obj: object) -> object:
    """``obj`` (a document as written, e.g. :func:`site_version_document`'s) with each template's default dropped
    (:func:`~storelens.config.env.mask_templates`): a value written as ``${VAR}`` shows as the template, never
    as what it expands to."""
    if isinstance(obj, str):
        return mask_templates(obj)
    if isinstance(obj, list):
        return [masked(v) for v in obj]
    if isinstance(obj, dict):
        return {k: masked(v) for k, v in obj.items()}
    return obj


def restore_masked(config: SiteConfig, cameras: list, alert_rules: list | None = None) -> tuple[list, list | None]:
    """``cameras`` and ``alert_rules`` of a site edit through the API (dicts) with each value that shows a value of
    the site in force (``config``) as answers show it (:func:`masked`, e.g. ``${PRODUCT}`` for
    ``${PRODUCT:-Shampoo}``) at the same place (the same field of the camera, zone, line or rule of the same
    ``id``) put back as the site holds it: the dashboard sends back the zone it was shown with only the polygon
    moved. Called before :func:`check_edit_env`; a value put back is the one the site holds there already, so
    no template is added (any other is checked as before). So a template's default cannot be dropped or changed
    through the API (sending ``${VAR}`` keeps ``${VAR:-default}``; logged at info, naming the field, never the
    value): ``storelens site import`` (the operator's) saves a file's values as written.

    Example:
        >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", "zones": [
        ...     {"id": "z", "polygon": [[0, 0], [9, 0], [9, 9]], "kind": "shelf", "product": "${P:-Shampoo}"}]}]})
        >>> shown = masked(site_version_document(cfg)["cameras"])
        >>> shown[0]["zones"][0]["product"], restore_masked(cfg, shown)[0][0]["zones"][0]["product"]
        ('${P}', '${P:-Shampoo}')
    """
    held = site_version_document(config)
    cameras = _unredacted_sources(cameras, held["cameras"])
    return (_unmasked(cameras, held["cameras"], "cameras"),
            None if alert_rules is None else _unmasked(alert_rules, held["alert_rules"], "alerts.rules"))


def _unredacted_sources(given: list, held: list) -> list:
    """``given`` cameras with each source that is the held source of the camera of the same ``id`` as answers
    show it (:func:`~storelens.config.cameras.redact_source` of :func:`masked`: credentials removed or ``***``) put
    back as held, so a camera sent back as shown with another setting changed keeps its credentials. Any other
    source holding the mask ``***`` is refused (:class:`ConfigError` naming the field): it would put the mask in
    force as the password."""
    from storelens.config.redact import MASK, redact_source

    by_id = {c["id"]: c for c in held if isinstance(c, dict) and isinstance(c.get("id"), str)}
    out = []
    for i, cam in enumerate(given):
        source = cam.get("source") if isinstance(cam, dict) else None
        held_cam = by_id.get(cam["id"]) if isinstance(source, str) and isinstance(cam.get("id"), str) else None
        was = held_cam.get("source") if held_cam is not None else None
        if isinstance(source, str) and source != was:
            if isinstance(was, str) and source == redact_source(mask_templates(was)):
                cam = {**cam, "source": was}
                log.info("site edit: cameras.%d.source sent as shown (credentials hidden): kept as held", i)
            elif MASK in source and "://" in source:
                raise ConfigError(
                    f"config error in the site: cameras.{i}.source: holds {MASK}, the mask answers show for a "
                    "credential, and is not camera "
                    f"{cam.get('id')!r}'s source as shown: send the source as shown to keep the credentials the "
                    "site holds, or the whole source with them (or a ${VAR} template)")
        out.append(cam)
    return out


def _unmasked(given: object, held: object, loc: str) -> object:
    """``given`` (at ``loc``, e.g. ``cameras.0.source``) with each string equal to :func:`masked` of the string
    ``held`` has at the same place replaced by the held one (list items matched by ``id`` where both have one,
    else by position)."""
    if isinstance(given, str):
        if not (isinstance(held, str) and has_template(held) and given == mask_templates(held)):
            return given
        if held != given:  # a default the answer did not show: kept (the value is not logged: it may be a secret)
            log.info("site edit: %s sent as shown (${VAR}, no default) where the site holds a template with a "
                     "default: kept as held (a default changes only through `storelens site import`)", loc)
        return held
    if isinstance(given, dict) and isinstance(held, dict):
        return {k: _unmasked(v, held.get(k), f"{loc}.{k}") for k, v in given.items()}
    if isinstance(given, list) and isinstance(held, list):
        by_id = {h["id"]: h for h in held if isinstance(h, dict) and isinstance(h.get("id"), str)}

        def same(i: int, v: object) -> object:
            if isinstance(v, dict) and isinstance(v.get("id"), str):
                return by_id.get(v["id"])
            return held[i] if i < len(held) else None
        return [_unmasked(v, same(i, v), f"{loc}.{i}") for i, v in enumerate(given)]
    return given


def _is_url_or_index(source: str) -> bool:
    return "://" in source or source.isdigit()


def resolve_source(source: str, base: pathlib.Path) -> str:
    """A camera source as a process reads it: a relative file path resolved against ``base`` (a site file's
    folder, or the working directory for a path given on the command line); URLs and webcam indexes as given.

    Example:
        >>> resolve_source("door.mp4", pathlib.Path("/srv/site")), resolve_source("rtsp://h/s", pathlib.Path("/x"))
        ('/srv/site/door.mp4', 'rtsp://h/s')
    """
    if _is_url_or_index(source):
        return source
    p = pathlib.Path(source)
    return str(p if p.is_absolute() else (base / p).resolve())


#: The site file's file and folder paths, resolved against its folder when relative: ``(section keys, key, only
#: where it exists there)``. ``detector.weights`` may also be a model name that Ultralytics downloads
#: (``yolo11n.pt``): it is resolved only where the file exists beside the site file.
PATH_FIELDS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("storage",), "path", False),
    (("faces", "reid"), "sqlite_path", False),
    (("floor_plan",), "image", False),
    (("detector",), "weights", True),
    (("detector",), "cache_dir", False),
    (("tracker",), "reid_weights", False),
    (("tracker",), "embedder_weights", False),
    (("faces", "detector"), "weights", False),
    (("faces", "attention"), "weights", False),
    (("faces", "attention"), "gaze_weights", False),
    (("faces", "attention"), "landmarks_weights", False),
    (("faces", "age_gender"), "model_dir", False),
    (("faces", "age_gender"), "omz_weights", False),
    (("faces", "emotion"), "weights", False),
    (("faces", "embedder"), "weights", False),
)


#: The data files among :data:`PATH_FIELDS` (the SQLite history and face gallery, ``storage.backend: sqlite``):
#: relative to the working directory before this version, so :func:`_resolve_paths` refuses one found only there.
DATA_PATH_FIELDS: tuple[tuple[tuple[str, ...], str], ...] = ((("storage",), "path"), (("faces", "reid"), "sqlite_path"))


def _not_moved(field: str, value: str, resolved: pathlib.Path, origin: str) -> None:
    """:class:`ConfigError` when the relative data file ``value`` is missing beside the site file (``resolved``)
    but exists relative to the working directory, where releases before this one opened it: starting on a new,
    empty database instead would lose the history without a word."""
    old = (pathlib.Path.cwd() / value).resolve()
    if old != resolved and old.exists() and not resolved.exists():
        raise ConfigError(f"config error in {origin}: {field}: {value!r} is relative to the site file's folder "
                          f"({resolved}, which does not exist), no longer to the working directory ({old}, which "
                          f"exists): move it or give an absolute path")


def _resolve_paths(raw: dict, base: pathlib.Path, origin: str = "<config>") -> dict:
    """Relative paths of ``raw`` (camera sources and :data:`PATH_FIELDS`) resolved against ``base``, in place;
    :class:`ConfigError` for a SQLite data file (:data:`DATA_PATH_FIELDS`) that exists only relative to the
    working directory (:func:`_not_moved`)."""
    storage = raw.get("storage")
    sqlite = not (isinstance(storage, dict) and storage.get("backend") == "postgres")
    for cam in raw.get("cameras") or []:
        if isinstance(cam, dict) and isinstance(cam.get("source"), str):
            cam["source"] = resolve_source(cam["source"], base)
    for keys, key, if_exists in PATH_FIELDS:
        section: object = raw
        for k in keys:
            section = section.get(k) if isinstance(section, dict) else None
        value = section.get(key) if isinstance(section, dict) else None
        if not isinstance(value, str) or not value or "://" in value or value == ":memory:" \
                or value.startswith("file:"):  # a SQLite URI (file::memory:) as it is
            continue
        p = pathlib.Path(value)
        if not p.is_absolute() and (not if_exists or (base / p).exists()):
            resolved = (base / p).resolve()
            if sqlite and (keys, key) in DATA_PATH_FIELDS:
                _not_moved(".".join((*keys, key)), value, resolved, origin)
            section[key] = str(resolved)  # type: ignore[index]
    return raw


def format_validation_error(err: ValidationError | list, origin: str) -> str:
    """One line: ``config error in FILE: loc: msg; loc: msg`` (of ``err``, or of a list of its ``errors()``)."""
    parts = []
    for e in (err if isinstance(err, list) else err.errors()):
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        parts.append(f"{loc}: {e['msg'].removeprefix('Value error, ')}")
    return f"config error in {origin}: " + "; ".join(parts)


def yaml_error(path: object, exc: Exception) -> ConfigError:
    """A one-line error for invalid YAML, with the line and column where it is."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"config error in {path}: not valid YAML{where}: {problem}")


def parse_config(raw: object, origin: str = "<config>", base: pathlib.Path | None = None,
                 open_cameras: bool = True) -> SiteConfig:
    """Validate an already-parsed YAML/JSON document into a :class:`SiteConfig`.

    ``open_cameras=False`` (a command that never opens the cameras: its ``${CAM_PASSWORD}`` need not be set): a
    ``${VAR}`` under ``cameras`` whose variable is not set stays as written instead of failing; elsewhere (e.g.
    ``storage.dsn``) it fails as always.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"config error in {origin}: expected a mapping at the top level")
    written = copy.deepcopy(raw)
    try:  # text the database cannot store (NUL, a lone surrogate): every read of the site, every edit would fail
        check_storable("", written)
    except ConfigError as e:
        raise ConfigError(f"config error in {origin}: {e}") from None
    raw = _expand(raw, origin, open_cameras=open_cameras)
    assert isinstance(raw, dict)
    base = base or pathlib.Path.cwd()
    _resolve_paths(raw, base, origin)
    try:
        config = SiteConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, origin)) from None
    for _key, problem in _webhook_rules_to_warn(config, always=True):  # a site version may add the rule: no error
        log.warning("%s: %s: that webhook gets no alert of it unless a site version adds the rule (PUT "
                    "/v1/site/alerts/rules/{id})", origin, problem)
    config._written, config._written_gave, config._base = written, config.model_dump(mode="json"), base
    config._open_cameras = open_cameras
    return config


def parse_faces_section(raw: object, origin: str = "<config>", base: pathlib.Path | None = None) -> FacesConfig:
    """The ``faces`` section of the site document ``raw`` for a command that uses only it (``storelens faces``):
    that section validated as :func:`parse_config` does (its ``${VAR}``s must be set, relative model paths
    against ``base``); the rest only for unknown keys, its ``${VAR}``s left as written when not set, and its values
    not checked (``storage.dsn``'s ``${STORELENS_DB_HOST}`` need not be set to look at a still image). A document
    without ``store`` or ``cameras`` is one too. :class:`ConfigError` names the field.

    Example:
        >>> doc = {"storage": {"backend": "postgres", "dsn": "postgresql://${DOC_UNSET_DB_HOST}/x"},
        ...        "faces": {"quality": {"min_size_px": 48}}}
        >>> parse_faces_section(doc).quality.min_size_px
        48.0
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"config error in {origin}: expected a mapping at the top level")
    raw = {"store": {"id": "faces"}, "cameras": [{"id": "cam", "source": "unused.mp4"}], **raw}
    rest = _expand({k: v for k, v in raw.items() if k != "faces"}, origin, keep_unset=True)
    faces = _expand(raw.get("faces"), origin, "faces")
    assert isinstance(rest, dict)
    storage = rest.get("storage")
    backend = storage.get("backend") if isinstance(storage, dict) else None
    _resolve_paths({"faces": faces, "storage": {"backend": backend}}, base or pathlib.Path.cwd(), origin)
    try:
        SiteConfig.model_validate({**rest, **({"faces": faces} if "faces" in raw else {})})
    except ValidationError as err:
        errors = [e for e in err.errors() if e["type"] == "extra_forbidden" or e["loc"][:1] == ("faces",)]
        if errors:
            raise ConfigError(format_validation_error(errors, origin)) from None
    try:
        return FacesConfig.model_validate(faces or {})
    except ValidationError as err:  # not seen above: SiteConfig reported it under faces
        raise ConfigError(format_validation_error(err, f"{origin}: faces")) from None


def _templated(written: object, gave: object, parsed: object) -> object:
    """``parsed`` with each string that ``written`` holds at the same place as a ``${VAR}`` template put back,
    where ``parsed`` still holds the value it gave (``gave``); elsewhere the value in ``parsed``."""
    if isinstance(written, str):
        return written if has_template(written) and gave == parsed else parsed
    if isinstance(written, dict) and isinstance(parsed, dict):
        gave = gave if isinstance(gave, dict) else {}
        return {k: _templated(written.get(k), gave.get(k), v) for k, v in parsed.items()}
    if isinstance(written, list) and isinstance(parsed, list) and len(written) == len(parsed):
        gave = gave if isinstance(gave, list) and len(gave) == len(parsed) else [None] * len(parsed)
        return [_templated(w, g, v) for w, g, v in zip(written, gave, parsed)]
    return parsed


def written_document(config: SiteConfig, doc: dict) -> dict:
    """``doc`` (a dump of ``config``, e.g. :func:`site_document`) with the values the site was written with as
    ``${VAR}`` templates put back unexpanded, so that no secret of this process's environment is written out;
    the other values as in ``doc`` (relative paths resolved, defaults filled in). A template is put back only
    where ``config`` still holds the value it gave when it was read (:func:`parse_config`, :func:`with_cameras`):
    a value changed since (e.g. by ``model_copy(update=...)``) is written as it is now.

    Example:
        >>> cam = {"id": "c", "source": "rtsp://u:${DOC_CAM_PW:-s3cret}@h/"}
        >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [cam]})
        >>> cfg.cameras[0].source, written_document(cfg, site_document(cfg))["cameras"][0]["source"]
        ('rtsp://u:s3cret@h/', 'rtsp://u:${DOC_CAM_PW:-s3cret}@h/')
    """
    return _templated(config._written, config._written_gave, doc)  # type: ignore[return-value]


def site_version_document(config: SiteConfig) -> dict:
    """What a site version stores and publishes (table ``site_versions``, the ``site-config`` topic):
    ``{"cameras": [...], "alert_rules": [...]}`` as written, ``${VAR}`` templates unexpanded (e.g. a camera
    password stays ``${CAM_PASSWORD}``). Each process expands them with its own environment when it puts
    the version in force (:func:`with_cameras`); credentials live in the environment, never in a version.
    """
    doc = written_document(config, {"cameras": [c.model_dump(mode="json") for c in config.cameras],
                                    "alerts": {"rules": [r.model_dump(mode="json") for r in config.alerts.rules]}})
    return {"cameras": doc["cameras"], "alert_rules": doc["alerts"]["rules"]}


def site_document(config: SiteConfig, exclude_defaults: bool = False) -> dict:
    """``config`` as a site file would say it (JSON types), without the values derived from others
    (:data:`DERIVED_FIELDS`): e.g. an unset ``detector.confidence`` follows the tracker
    (``SiteConfig._detector_down_to_tracker``), so that validating the document again derives it again (e.g.
    after a switch to ``deepsort``), and an unset ``zones.lost_after_ms`` is not taken as set; nor the deep-sort
    tracker's ``embedder_*`` keys its embedder has no setting for (they are at their defaults).

    Example:
        >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]})
        >>> cfg.detector.confidence, "confidence" in site_document(cfg)["detector"]
        (0.1, False)
    """
    doc = config.model_dump(mode="json", exclude_defaults=exclude_defaults)
    for section, field in DERIVED_FIELDS:
        if field not in getattr(config, section).model_fields_set and isinstance(doc.get(section), dict):
            doc[section].pop(field, None)
            if exclude_defaults and not doc[section]:
                del doc[section]
    unused = getattr(config.tracker, "keys_without_use", None)
    if unused is not None and isinstance(doc.get("tracker"), dict):
        for key in unused():      # e.g. deep-sort's embedder_input_wh with omz-reid-openvino, which has no input_wh
            doc["tracker"].pop(key, None)
    if exclude_defaults:
        _say_backends(config, doc)
    return doc


def _say_backends(model: object, doc: dict) -> None:
    """``doc`` (``model`` dumped with ``exclude_defaults``) saying the ``backend`` of each backend section
    (:class:`~storelens.config.base.BackendConfig`) that is not its kind's default, in place: ``backend: deepsort``
    is its class's own default, so it was left out, and the file then loaded as the default ``bytereid`` tracker."""
    from storelens.config.base import BackendConfig

    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BackendConfig) and value.backend != type(value).default_backend:
            doc.setdefault(name, {})["backend"] = value.backend
        if isinstance(value, Strict) and isinstance(doc.get(name), dict):
            _say_backends(value, doc[name])


def unversioned_differences(running: SiteConfig, other: SiteConfig) -> list[str]:
    """The settings of the site file ``other`` (one being saved as a site version, ``storelens site import``) that
    a version does not hold and that differ from the ``running`` site file's: top-level sections by name
    (``counting``, ``privacy``), ``store`` and ``alerts`` field by field (``store.timezone``, ``alerts.webhooks``).
    A version holds only ``cameras`` and ``alerts.rules``; everything else comes from each service's own site file.
    ``storage`` is not compared: it is each deployment's (``--db``, a copy's ``hist.db`` beside it), and the import
    goes to the store the command names. ``other`` is compared as written, its relative paths taken against
    ``running``'s folder (as the import takes its cameras' sources): a copy of the file in another folder is the
    same file.

    Example:
        >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]})
        >>> edited = parse_config({"store": {"id": "s", "timezone": "Asia/Tokyo"}, "counting": {"hysteresis_px": 40},
        ...                        "cameras": [{"id": "d", "source": "y.mp4"}], "storage": {"path": "other.db"}})
        >>> unversioned_differences(cfg, edited)
        ['store.timezone', 'counting']
    """
    if isinstance(other._written, dict) and running._base is not None and running._base != other._base:
        try:  # relative paths as the running file's would resolve them (a copy in another folder); no warning again
            raw = _expand(other._written, "site", open_cameras=other._open_cameras)
            other = SiteConfig.model_validate(_resolve_paths(raw, running._base))  # type: ignore[arg-type]
        except (ConfigError, ValidationError):
            pass  # compared as read
    a, b = (site_document(c) for c in (running, other))
    out: list[str] = []
    for key in dict.fromkeys([*a, *b]):
        if key in ("cameras", "storage"):
            continue
        if key in ("store", "alerts"):
            x, y = a.get(key) or {}, b.get(key) or {}
            out += [f"{key}.{k}" for k in dict.fromkeys([*x, *y]) if (key, k) != ("alerts", "rules")
                    and x.get(k) != y.get(k)]
        elif a.get(key) != b.get(key):
            out.append(key)
    return out


#: The settings whose unset value follows another setting (:func:`~storelens.config.base.follow_unset`), left out
#: of :func:`site_document` unless the file set them: ``detector.confidence`` (the tracker's low threshold) and
#: ``zones.lost_after_ms`` (the tracker's re-find window, or the zones' ``exit_after_ms``) and
#: ``counting.refind_window_ms`` (the tracker's re-find window).
DERIVED_FIELDS = (("detector", "confidence"), ("zones", "lost_after_ms"), ("counting", "refind_window_ms"))


#: Validation context key (``SiteConfig.model_validate(..., context={STORED_VERSION: True})``) of a site version
#: already stored (:func:`with_site_update`): a rule that would never fire (:meth:`SiteConfig._never_fires`), refused
#: in new input (the site file, ``PUT /v1/site``, ``storelens site import``), is left out with a warning instead:
#: a version saved before such rules were refused still applies. So is a camera's ``floor`` whose points determine
#: no homography (:func:`_without_undetermined_floors`).
STORED_VERSION = "stored_version"
#: ``(origin, rule id)`` of the rules left out of a stored version this process has warned of.
_NEVER_FIRING_WARNED: set[tuple[str, str]] = set()


def _without_never_firing(new: SiteConfig, raw: dict, written: dict, gave: dict, origin: str) -> SiteConfig | None:
    """A stored version validated with :data:`STORED_VERSION` (``new``, of ``raw``) without its rules that would
    never fire, each warned of once in a process (``written`` and ``gave`` lose them too: the next version saved
    does not hold them); ``None`` when it has none."""
    dead = [(i, problem) for i in range(len(new.alerts.rules)) if (problem := new._never_fires(i))]
    if not dead:
        return None
    ids = {new.alerts.rules[i].id for i, _ in dead}
    for i, problem in dead:
        key = (origin, new.alerts.rules[i].id)
        with _WEBHOOK_RULES_LOCK:
            first = key not in _NEVER_FIRING_WARNED
            _NEVER_FIRING_WARNED.add(key)
        if first:
            log.warning("%s: %s: the rule is left out (a version saved before such a rule was refused; the next "
                        "version saved drops it)", origin, problem, extra={"rule": new.alerts.rules[i].id})
    raw["alerts"]["rules"] = [r for i, r in enumerate(raw["alerts"]["rules"]) if i not in {j for j, _ in dead}]
    for doc in (written, gave):
        rules = (doc.get("alerts") or {}).get("rules") if isinstance(doc.get("alerts"), dict) else None
        if isinstance(rules, list):
            doc["alerts"]["rules"] = [r for r in rules if not (isinstance(r, dict) and r.get("id") in ids)]
    return SiteConfig.model_validate(raw)


#: ``(origin, camera id)`` of the floors left out of a stored version this process has warned of.
_FLOOR_DROPPED_WARNED: set[tuple[str, str]] = set()


def _without_undetermined_floors(cameras: list, written: list, origin: str) -> None:
    """A stored version's cameras (``cameras``, expanded; ``written``, the same as written) without each ``floor``
    whose points determine no homography (refused in new input since, :class:`CameraFloorConfig`; a version saved
    before applies): the camera applies without its floor (no floor heatmap, walking figures or place on the plan,
    as a camera without one), warned of once in a process; the next version saved does not hold it. A floor
    malformed otherwise stays (refused as before)."""
    for i, cam in enumerate(cameras):
        floor = cam.get("floor") if isinstance(cam, dict) else None
        if not isinstance(floor, dict):
            continue
        try:
            floor_homography(CameraFloorConfig.model_validate(floor, context={FLOOR_UNCHECKED: True}).points)
            continue
        except ValidationError:  # (a ValueError too) malformed otherwise: refused as before
            continue
        except ValueError as exc:
            problem = str(exc)
        del cam["floor"]
        if i < len(written) and isinstance(written[i], dict):
            written[i].pop("floor", None)
        key = (origin, str(cam.get("id")))
        with _WEBHOOK_RULES_LOCK:
            first = key not in _FLOOR_DROPPED_WARNED
            _FLOOR_DROPPED_WARNED.add(key)
        if first:
            log.warning("%s: cameras.%d.floor.points: they determine no homography (%s): the camera's floor is left "
                        "out (a version saved before such points were refused; the next version saved drops it): no "
                        "floor heatmap of it until a floor is set again", origin, i, problem,
                        extra={"camera": cam.get("id")})


def with_cameras(config: SiteConfig, cameras: list, origin: str = "site", alert_rules: list | None = None,
                 stored: bool = False) -> SiteConfig:
    """``config`` with its ``cameras`` list replaced (dicts or :class:`CameraConfig`), validated as a whole;
    with ``alert_rules`` (dicts or rule objects; ``None``: unchanged), its ``alerts.rules`` too.

    ``${VAR}`` templates in them are expanded with this process's environment (a variable not set is a
    :class:`ConfigError` naming the field and the variable; a camera's stays as written when ``config`` was read
    with ``open_cameras=False``, :func:`parse_config`); the result remembers them as given, templates
    unexpanded (:func:`site_version_document`). A relative camera source is then resolved against the folder
    ``config`` was read from (its site file's, as :func:`parse_config` does): a version published by another
    process (``site-config``) resolves against the receiving process's own site file's folder. The site's
    cross references are checked again (alert rules naming cameras and zones); :class:`ConfigError` names the
    bad field like a bad YAML file would. ``journeys.links`` and ``store.entrance_lines`` (set only in the site
    file, nothing edits them) are not checked but follow the cameras: a link naming a camera the list no longer
    has, an entrance line whose camera or line it no longer has, is left out (a warning names it), and comes back
    with the camera (:func:`_links_of`, :func:`_entrance_lines_in_version`; entrance lines all left out are
    ``[]``, never ``None``, every line). The entrance lines left out are only out of ``store.entrance_lines``
    (so the version validates, and ``storelens site export`` writes a file that loads): every reader counts with
    the site file's (:func:`entrance_lines_of`), so the stored crossings of a removed line keep their meaning.
    A webhook's ``rules`` id that the alert rules in force lack is warned of once in a process (whichever site it
    is built from), again only after a site had the rule again (:func:`_webhook_rules_to_warn`). ``stored``: a
    version already saved (:func:`with_site_update`), whose rules that would never fire, and camera floors whose
    points determine no homography, are left out with a warning (:data:`STORED_VERSION`), not refused.

    Example:
        >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]})
        >>> moved = with_cameras(cfg, [{"id": "c", "source": "x.mp4", "lines": [{"id": "d", "a": [0, 5], "b": [9, 5]}]}])
        >>> [ln.id for ln in moved.cameras[0].lines], cfg.cameras[0].lines
        (['d'], [])
    """
    cams = [c.model_dump(mode="json") if isinstance(c, CameraConfig) else c for c in cameras]
    written = copy.deepcopy(config._written) if isinstance(config._written, dict) else {}
    gave = copy.deepcopy(config._written_gave) if isinstance(config._written_gave, dict) else {}
    written["cameras"] = copy.deepcopy(cams)
    raw = site_document(config)
    raw["cameras"] = _expand(cams, origin, "cameras", config._open_cameras)
    _resolve_paths({"cameras": raw["cameras"]}, config._base or pathlib.Path.cwd())
    if stored:
        _without_undetermined_floors(raw["cameras"], written["cameras"], origin)
    file_links, links = _links_of(config, raw["cameras"], origin)
    raw["journeys"]["links"] = [ln.model_dump(mode="json") for ln in links]
    file_entrances, raw["store"]["entrance_lines"] = _entrance_lines_in_version(config, raw["cameras"], origin)
    if alert_rules is not None:
        rules = [r if isinstance(r, dict) else r.model_dump(mode="json") for r in alert_rules]
        written["alerts"] = {**(written.get("alerts") or {}), "rules": copy.deepcopy(rules)}
        raw["alerts"]["rules"] = _expand(rules, origin, "alerts.rules")
    try:
        new = SiteConfig.model_validate(raw, context={STORED_VERSION: True} if stored else None)
        if stored:
            new = _without_never_firing(new, raw, written, gave, origin) or new
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, origin)) from None
    # what the given templates gave; the rest of the site keeps what its templates gave when read
    dump = new.model_dump(mode="json")
    gave["cameras"] = dump["cameras"]
    if alert_rules is not None:
        gave["alerts"] = {**(gave.get("alerts") or {}), "rules": dump["alerts"]["rules"]}
    new._written, new._written_gave, new._base, new._open_cameras = written, gave, config._base, config._open_cameras
    new._file_links, new._file_entrance_lines = file_links, file_entrances
    if alert_rules is not None:  # else the rules are config's: parse_config or an earlier version warned
        for _key, problem in _webhook_rules_to_warn(new):
            log.warning("%s: %s in force: that webhook gets no alert of it until a site version adds the rule",
                        origin, problem)
    return new


def _links_of(config: SiteConfig, cameras: list, origin: str) -> tuple[list, list]:
    """``(the site file's journeys.links, those of them naming only cameras in cameras)``: a site version replaces
    the cameras, never the links, so a link of a camera it removed is left out (a warning names it the first time)
    instead of making the version invalid (an admin could not remove the camera, and a version saved before
    links were checked would not apply)."""
    file_links = journey_links_of(config)
    ids = {c.get("id") for c in cameras if isinstance(c, dict)}
    kept = [ln for ln in file_links if ln.source in ids and ln.target in ids]
    for ln in config.journeys.links:
        if ln not in kept:
            gone = sorted({ln.source, ln.target} - ids)
            log.warning("journeys.links: the link from %r to %r is left out: %s has no camera %s (the stored "
                        "journeys through it stay linked; it comes back with the camera)", ln.source, ln.target,
                        origin, ", ".join(repr(c) for c in gone))
    return file_links, kept


def journey_links_of(config: SiteConfig) -> list[JourneyLinkConfig]:
    """The camera links every reader of the history links journeys with (``/v1/journeys``, ``/v1/flows``,
    ``/v1/paths/top``, erasure's journey tracks): the site file's ``journeys.links``, also those of a camera a site
    version removed. The removed camera's stored tracks stay, so last week's journeys through it stay linked as
    they were; it adds no new tracks, so its links link nothing new (the version's ``journeys.links`` leaves them
    out only so that it validates; the live stages do not link). See :func:`journeys_of`.

    Example:
        >>> cfg = parse_config({"store": {"id": "s"}, "journeys": {"links": [{"from": "door", "to": "hall"}]},
        ...                     "cameras": [{"id": "door", "source": "x.mp4"}, {"id": "hall", "source": "y.mp4"}]})
        >>> v = with_cameras(cfg, [{"id": "hall", "source": "y.mp4"}])
        >>> v.journeys.links, [(ln.source, ln.target) for ln in journey_links_of(v)]
        ([], [('door', 'hall')])
    """
    return list(config.journeys.links if config._file_links is None else config._file_links)


def journeys_of(config: SiteConfig) -> JourneysConfig:
    """``config.journeys`` with the links of :func:`journey_links_of`: what the readers of the history link with."""
    links = journey_links_of(config)
    return config.journeys if links == list(config.journeys.links) else config.journeys.model_copy(
        update={"links": links})


def entrance_lines_of(config: SiteConfig) -> list[str] | None:
    """The store's entrance lines (``camera_id/line_id``; ``None``: every line) every reader counts with: the site
    file's ``store.entrance_lines``, also those of a camera or line a site version removed (the stage's store
    occupancy, ``/v1/kpis`` visitors and buying units, ``/v1/journeys``' ``entered``, erasure, the chain roll-up).
    A removed line adds no new crossings, so its stored ones keep the meaning the site file gave them (last week's
    visitors stay as counted); the version's ``store.entrance_lines`` leaves them out only so that it validates.

    Example:
        >>> line = {"id": "in", "a": [0, 5], "b": [9, 5]}
        >>> cfg = parse_config({"store": {"id": "s", "entrance_lines": ["door/in"]},
        ...                     "cameras": [{"id": "door", "source": "x.mp4", "lines": [line]},
        ...                                 {"id": "hall", "source": "y.mp4"}]})
        >>> v = with_cameras(cfg, [{"id": "hall", "source": "y.mp4"}])
        >>> v.store.entrance_lines, entrance_lines_of(v)
        ([], ['door/in'])
    """
    return config.store.entrance_lines if config._file_entrance_lines is None else list(config._file_entrance_lines)


def _entrance_lines_in_version(config: SiteConfig, cameras: list, origin: str) -> tuple[list | None, list | None]:
    """``(the site file's store.entrance_lines, those of them naming a line of a camera in cameras)``, as
    :func:`_links_of`: a site version replaces the cameras (and their lines), never the store section, so an
    entrance line it removed (its camera, or the line alone) is left out of the version's ``store`` (so that it
    validates) with a warning the first time, and comes back with them. The readers count with the first
    (:func:`entrance_lines_of`): the removed line's stored crossings keep counting, it adds no new ones. The
    file's ``None`` (every line is an entrance) stays ``None``; a list stays a list, also when none of its lines
    is left (``[]``), never ``None`` (that would count every line, a department's too, as the store's door)."""
    file_lines = entrance_lines_of(config)
    if file_lines is None:
        return None, None
    known = {f"{c.get('id')}/{ln.get('id')}" for c in cameras if isinstance(c, dict)
             for ln in (c.get("lines") or ()) if isinstance(ln, dict)}
    kept = [x for x in file_lines if x in known]
    gone = [x for x in config.store.entrance_lines or () if x not in kept]
    if gone:
        none_left = (" No entrance line is left in the version: no new visitor is counted until one comes back "
                     "(store.entrance_lines still means only its lines, never every line).") if not kept else ""
        log.warning("store.entrance_lines: %s left out: %s has no such camera line; its stored crossings still "
                    "count as store entrances, and new ones again when it comes back with the camera and line.%s",
                    ", ".join(repr(x) for x in gone), origin, none_left)
    return list(file_lines), kept


def with_site_update(config: SiteConfig, update) -> SiteConfig:
    """``config`` with the cameras and alert rules of a ``SiteUpdate`` (a version edited through the API).

    ``alert_rules_json`` empty: the rules stay (versions saved before rules were editable). The version is stored
    already: a rule of it that would never fire (a ``loitering`` rule on a zone with ``loiter_after_s`` 0, taken
    before such rules were refused) is left out with a warning, not a reason to refuse the whole version.
    """
    import json

    rules = json.loads(update.alert_rules_json) if update.alert_rules_json else None
    return with_cameras(config, json.loads(update.cameras_json or "[]"), origin=f"site version {update.version}",
                        alert_rules=rules, stored=True)


def _webhook_rule_problems(config: SiteConfig) -> list[tuple[tuple[int, str, str], str]]:
    """The rule ids of ``alerts.webhooks[].rules`` that ``alerts.rules`` does not have (a webhook that gets no
    alert of them): ``((webhook index, url, rule id), line)`` each, the line e.g. ``alerts.webhooks.0.rules: no such
    alert rule 'crowd' (rule ids: [...])``. Only warned of: the webhooks are the site file's, the rules may come
    from a site version (``PUT /v1/site/alerts/rules/{id}``), and the filter takes the alert's rule id as it is."""
    ids = {r.id for r in config.alerts.rules}
    return [((i, w.url, rid), f"alerts.webhooks.{i}.rules: no such alert rule {rid!r} (rule ids: {sorted(ids)})")
            for i, w in enumerate(config.alerts.webhooks) for rid in (w.rules or ()) if rid not in ids]


#: ``(webhook index, url, rule id)`` of the ``alerts.webhooks[].rules`` ids this process has warned of as missing
#: and no site built since had (:func:`_webhook_rules_to_warn`).
_WEBHOOK_RULES_WARNED: set[tuple[int, str, str]] = set()
_WEBHOOK_RULES_LOCK = threading.Lock()


def _webhook_rules_to_warn(config: SiteConfig, always: bool = False) -> list[tuple[tuple[int, str, str], str]]:
    """The problems of :func:`_webhook_rule_problems` to warn of: once per (webhook, rule) in a process, not at every
    build of a site version (ingest builds each from the site file, each stage from the one before; every build
    warned again), and once more after a site had the rule again (a version removing it again). ``always``: every
    one (loading the site file: its own problems, said once per load)."""
    problems = _webhook_rule_problems(config)
    ids = {r.id for r in config.alerts.rules}
    with _WEBHOOK_RULES_LOCK:
        _WEBHOOK_RULES_WARNED.difference_update((i, w.url, rid) for i, w in enumerate(config.alerts.webhooks)
                                                for rid in (w.rules or ()) if rid in ids)
        new = [(key, problem) for key, problem in problems if always or key not in _WEBHOOK_RULES_WARNED]
        _WEBHOOK_RULES_WARNED.update(key for key, _ in problems)
    return new


def _version_differences(file_doc: dict, version_doc: dict) -> list[str]:
    """What differs between two :func:`site_version_document`\\ s, named: ``camera 'c1': line 'd'``, ``camera
    'c2': only in the file``, ``camera 'c1': source``, ``alert rule 'crowd'``, ``order of the cameras``, ``order of
    the alert rules``.

    Example:
        >>> f = {"cameras": [{"id": "c", "source": "a", "lines": [{"id": "d", "a": [0, 50]}]}], "alert_rules": []}
        >>> v = {"cameras": [{"id": "c", "source": "a", "lines": [{"id": "d", "a": [0, 10]}]}], "alert_rules": []}
        >>> _version_differences(f, v)
        ["camera 'c': line 'd'"]
    """
    def by_id(items: object) -> dict:
        return {x.get("id"): x for x in items if isinstance(x, dict)} if isinstance(items, list) else {}

    def compare(kind: str, mine: object, theirs: object) -> list[str]:
        a, b = by_id(mine), by_id(theirs)
        return [f"{kind} {k!r}" + ("" if k in a and k in b else ": only in the file" if k in a else
                                   ": only in the version") for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]

    out: list[str] = []
    files, versions = by_id(file_doc.get("cameras")), by_id(version_doc.get("cameras"))
    for cid in dict.fromkeys([*files, *versions]):
        f, v = files.get(cid), versions.get(cid)
        if f == v:
            continue
        if f is None or v is None:
            out.append(f"camera {cid!r}: only in the {'version' if f is None else 'file'}")
            continue
        named = [d for key, kind in (("lines", "line"), ("zones", "zone")) for d in compare(kind, f.get(key),
                                                                                          v.get(key))]
        named += [k for k in dict.fromkeys([*f, *v]) if k not in ("id", "lines", "zones") and f.get(k) != v.get(k)]
        out += [f"camera {cid!r}: {d}" for d in named or ["order of its lines or zones"]]
    if not out and file_doc.get("cameras") != version_doc.get("cameras"):
        out.append("order of the cameras")  # the same cameras, in another order
    rules = compare("alert rule", file_doc.get("alert_rules"), version_doc.get("alert_rules"))
    if not rules and file_doc.get("alert_rules") != version_doc.get("alert_rules"):
        rules = ["order of the alert rules"]
    return out + rules


def site_file_override(config: SiteConfig, update) -> str | None:
    """The warning a service logs at start when the site version ``update`` it puts in force (edited through
    ``/v1/site`` or saved by ``storelens site import``) holds other cameras (lines, zones) or alert rules than its
    site file ``config``: the newest version wins over the file at every start, so an operator who edits those in
    the file (e.g. a camera URL in a Kubernetes ConfigMap, which rolls every pod) changes nothing until
    ``storelens site import`` saves the file as a new version. ``None`` when they are the same, or when the
    version is invalid (not in force; the service says so where it applies it).

    Example:
        >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "rtsp://h/1"}]})
        >>> from storelens.contract import messages as m
        >>> site_file_override(cfg, m.SiteUpdate(version=2, cameras_json='[{"id": "c", "source": "rtsp://h/1"}]'))
        >>> print(site_file_override(cfg, m.SiteUpdate(version=3, cameras_json='[{"id": "c", "source": "rtsp://h/2"}]')))
        ... # doctest: +ELLIPSIS
        the site file's cameras (lines, zones) differ from site version 3 (camera 'c': source), which is in force ...
    """
    try:
        in_force = with_site_update(config, update)
    except (ConfigError, ValueError):
        return None
    file_doc, version_doc = site_version_document(config), site_version_document(in_force)
    parts = [name for key, name in (("cameras", "cameras (lines, zones)"), ("alert_rules", "alert rules"))
             if file_doc[key] != version_doc[key]]
    if not parts:
        return None
    which = "; ".join(_version_differences(file_doc, version_doc))
    return (f"the site file's {' and '.join(parts)} differ from site version {update.version} ({which}), which is "
            f"in force "
            f"(saved through /v1/site or `storelens site import`; the newest version wins over the file): editing "
            f"them in the file changes nothing until `storelens site import <site file>` saves it as a new version")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last silently: a
    second ``cameras:`` block would replace the first)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:  # its own keys: a merge (<<: *anchor) may hold a key it overrides
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: construct_mapping says so below
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike[str]) -> object:
    """A site file's YAML document (not validated); :class:`ConfigError` when missing, not YAML, or a mapping
    repeats a key (``config error in site.yaml: not valid YAML at line 7, column 1: duplicate key 'cameras'
    (first at line 2)``)."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = read_utf8(p, "config error in {path}: not UTF-8 (line {line}): save the file as UTF-8")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise yaml_error(p, exc) from None


def read_utf8(path: pathlib.Path, message: str, encoding: str = "utf-8") -> str:
    """The text of the file ``path``; :class:`ConfigError` ``message`` (formatted with ``path`` and ``line``, the
    first line that is not UTF-8) when it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ConfigError(message.format(path=path, line=data[:exc.start].count(b"\n") + 1)) from None


def load_config(path: str | os.PathLike[str], base: pathlib.Path | None = None,
                open_cameras: bool = True) -> SiteConfig:
    """Read and validate a site configuration file; raise :class:`ConfigError` if it is bad. Relative paths
    are resolved against ``base``, by default the file's folder; ``open_cameras``: see :func:`parse_config`."""
    p = pathlib.Path(path)
    return parse_config(read_yaml(p), origin=str(p), base=base or p.parent.resolve(), open_cameras=open_cameras)
