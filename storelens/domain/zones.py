"""Zones: enter/exit with inertia, dwell, loitering, occupancy, queues and per-bucket statistics.

Pure logic (numpy and :mod:`storelens.domain.geometry`): a :class:`ZoneTracker`
per camera takes each frame's track anchors (or boxes) and returns
:class:`ZoneEvent` s, like :class:`storelens.domain.counting.LineCounter` does
for lines. Zones are :class:`storelens.config.ZoneConfig` polygons in source
pixels; their parameters are the site's ``zones:`` defaults
(:class:`storelens.config.ZonesConfig`) unless the zone sets its own.

Rules (each is a case in ``tests/test_zones.py``):

* **Anchor.** A person is where their anchor is: the bottom-centre of the box
  (the feet, default) or the box centre (``anchor: center``, for views from
  above). Given boxes ``(N, 4)`` each zone uses its own anchor; given points
  ``(N, 2)`` they are the anchors. Inside = even-odd rule.
* **Inertia.** An entry counts once the track has been inside for at least
  ``enter_after_ms``; its time is the *first* inside time. An exit counts once
  it has been outside for at least ``exit_after_ms``; its time is the first
  outside time, and ``dwell_ms`` = exit time - entry time. Border jitter
  therefore does not split a visit. A pending entry is confirmed only by
  seeing the track inside again; a pending exit by time alone (seen outside
  or not at all), as soon as ``exit_after_ms`` has passed.
* **Occlusions and lost tracks.** A track last seen inside and then unseen
  (hidden behind another person, missed by the detector) keeps its visit for
  ``lost_after_ms`` (default: the time in which the tracker re-finds a lost
  track under the same id, 2.4 s with the default ``track_buffer`` and ``fps``,
  :class:`storelens.config.site.SiteConfig`): back inside within it, the visit goes on
  with no exit and no new entry, so the dwell and a queue's wait are whole;
  back outside within it, the exit is pending from that time as above.
  Unseen for longer, it exits with ``how="lost"`` at its last seen time. While
  hidden it still counts as in the zone (occupancy, queue length): the person
  is most likely still standing there; so the live occupancy counts a really
  lost track up to ``lost_after_ms`` too long, while its dwell (and the bucket
  statistics' mean occupancy) end at its last seen time.
  A track *seen* outside still exits after ``exit_after_ms``.
  :meth:`ZoneTracker.close` ends every open visit (end of a file): a pending
  exit at its first outside time, a hidden or visible track ``lost`` at its
  last seen time.
* **Passing through between samples.** A track that is seen outside, then
  inside for less than ``enter_after_ms`` or not at all, then outside again
  has passed through the zone if the straight segment from its last outside
  anchor to the new outside anchor passes through the polygon's interior
  (a fast walker across a thin zone, an anchor jumping over it between two
  sampled frames): an ``enter`` and an ``exit`` are emitted, at the times
  interpolated along that segment where it enters and last leaves the
  polygon, with that dwell. If the segment stays outside (border jitter,
  touching the zone and turning back) nothing counts. Touching only a vertex
  or an edge is not a pass, nor is a segment whose part inside the polygon is
  shorter than :data:`MIN_PASS_CHORD_H` of the person's box height (or, if
  shorter, than the zone's area / perimeter: half the width of a strip, so a
  walker across a thin zone still counts; with anchors given as points, that
  alone): a person standing just outside a convex corner, whose anchor jitters
  by a few pixels, cuts the corner between two samples (a box's jitter scales
  with its height, whatever the image size; the inside part is never longer
  than the step between the samples, so this also bounds that step).
* **Exclude zones.** An anchor inside an ``exclude`` zone is ignored by every
  other zone, as if the track were not seen in that frame (mannequins,
  screens, mirrors). Exclude zones have no events and no occupancy.
* **Loitering.** One ``loiter`` event per visit, at the first frame in which
  the track is seen inside with a dwell of at least ``loiter_after_s`` (0: off).
* **Queues.** The exit of a ``queue`` zone has ``how="service_edge"`` (served)
  when the segment from the last inside anchor to the first outside anchor
  crosses the zone's service edge, else ``"other"`` (abandoned) or ``"lost"``.
  A pass-through (above) is never served: its exit is ``"other"`` even if the
  path crosses the service edge (a person walking past the till); it still
  counts as a visit, as in every other zone kind.
  Every other exit has ``how`` ``"other"`` or ``"lost"``. :meth:`QueueStats.compute`
  gives, over a window: length now, measured waits of the served, served,
  abandoned and lost counts, and the wait predicted for someone joining now
  by Little's law, W = L / throughput (served in the window / the time the
  stream showed in the window, :class:`StreamCoverage`: less than the window
  after the stream started or stalled); ``None`` when nobody was served in
  the window or the stream showed less than :data:`MIN_QUEUE_COVERED_MS` of it.
* **Occupancy.** :meth:`ZoneTracker.occupancy`: open visits per zone (inertia
  applied; an occluded person still counts, up to ``lost_after_ms``); ``raw=True``: anchors
  inside in the last frame.
* **Buckets.** :class:`ZoneBuckets` aggregates per zone and time bucket: visits
  (entries), unique people, time-weighted mean (a visit counts from its entry
  time, the first inside time, to its exit time, the first outside time or a
  lost track's last seen time: its dwell) and max occupancy, median and
  p90 dwell of the visits that ended in the bucket, and for ``shelf`` zones the
  stoppers (ended visits of at least ``stopper_after_s``). A frame's occupancy
  holds until the next frame, at most the camera's longest ``lost_after_ms``
  (:attr:`ZoneTracker.max_lost_ms`, as long as the tracker counts an unseen
  person inside): the rest of a longer gap (a stalled stream) is not covered, and
  the mean is over the covered time only. At the end of a stream (:meth:`ZoneBuckets.end`) nothing holds on
  into the next one, and a next stream's frame in the ended stream's last bucket continues that bucket.

``entrance``, ``shelf`` and ``staff_only`` zones follow the ``area`` rules here
(their own meaning, store visits, product interest and staff filtering, is
built on these events). Events carry the ``seq`` of the frame they are dated
at (entry: first inside frame; exit: first outside frame, or last seen frame
when lost; loiter and pass-through: the frame that shows them) and a
deterministic ``event_id`` (:func:`zone_event_id`), so recomputing after a
redelivery gives the same ids; the zone tracker does not re-acquire id
switches (a new id is a new person).

Example (entry after 200 ms inside, exit after 200 ms outside):
    >>> from storelens.config import ZoneConfig, ZonesConfig
    >>> till = ZoneConfig(id="till", polygon=[(0, 0), (100, 0), (100, 100), (0, 100)])
    >>> zt = ZoneTracker("cam", [till], ZonesConfig(enter_after_ms=200, exit_after_ms=200))
    >>> path = [(150, 50), (50, 50), (50, 50), (50, 50), (50, 50), (150, 50), (150, 50), (150, 50), (150, 50)]
    >>> events = []
    >>> for seq, p in enumerate(path):
    ...     events += zt.update(seq=seq, ts_ms=seq * 100, track_ids=[7], anchors=[p])
    ...     if seq == 3:
    ...         print(zt.occupancy())
    {'till': 1}
    >>> [(e.kind, e.ts_ms, e.dwell_ms, e.how) for e in events]
    [('enter', 100, None, None), ('exit', 500, 400, 'other')]
    >>> events[0].event_id
    'cam:till:7:enter:1'
"""
from __future__ import annotations

import functools

from dataclasses import asdict, dataclass, field, fields
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np

from storelens.config import ZoneConfig, ZoneRules, ZonesConfig
from storelens.config.site import LOST_AFTER_MS
from storelens.domain.geometry import points_in_polygon, segments_intersect

Point = tuple[float, float]
#: The least part of a pass-through's segment inside the zone, as a fraction of the box height (see the rules).
MIN_PASS_CHORD_H = 0.1
EventKind = Literal["enter", "exit", "loiter"]
How = Literal["service_edge", "other", "lost"]


@dataclass(frozen=True)
class ZoneEvent:
    """An entry, exit or loitering of one track in one zone.

    ``dwell_ms`` is set on exits (the visit's length) and loiter events (the
    dwell so far); ``how`` on exits only.
    """

    event_id: str
    camera_id: str
    zone_id: str
    track_id: int
    kind: EventKind
    ts_ms: int
    seq: int
    dwell_ms: int | None = None
    how: How | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def zone_event_id(camera_id: str, zone_id: str, track_id: int, kind: str, seq: int) -> str:
    """Deterministic id: the same event recomputed after a redelivery has the same id."""
    return f"{camera_id}:{zone_id}:{track_id}:{kind}:{seq}"


@dataclass
class _Visit:
    """One track's state in one zone (serialised as a list of these fields, in order)."""

    inside: bool = False  # committed state
    enter_ts: int = 0
    enter_seq: int = 0
    pend_ts: int | None = None  # first time seen on the other side of the committed state
    pend_seq: int = 0
    pend_how: str | None = None  # how the pending exit left (queues: through the service edge?)
    out_pt: Point | None = None  # the last outside anchor before an entry (for the pass-through test)
    out_ts: int = 0
    last_in: Point | None = None  # the last inside anchor of the visit
    loitered: bool = False


@dataclass
class _Track:
    ts_ms: int  # last seen (not excluded)
    seq: int
    zones: dict[str, _Visit] = field(default_factory=dict)


@dataclass(frozen=True)
class _Zone:
    cfg: ZoneConfig
    rules: ZoneRules
    poly: np.ndarray
    service: tuple[Point, Point] | None

    @property
    def id(self) -> str:
        return self.cfg.id

    @functools.cached_property
    def area_per_perimeter(self) -> float:
        """Area / perimeter of the polygon: half the width of a long strip, a quarter of a square's side."""
        x, y = self.poly[:, 0], self.poly[:, 1]
        area = abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0
        perimeter = float(np.hypot(*(np.roll(self.poly, -1, axis=0) - self.poly).T).sum())
        return area / perimeter if perimeter > 0 else 0.0

    @functools.cached_property
    def bbox(self) -> tuple[float, float, float, float]:
        """x_min, y_min, x_max, y_max of the polygon."""
        (x0, y0), (x1, y1) = self.poly.min(axis=0), self.poly.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


def zone_anchors(pts: np.ndarray, anchor: str) -> np.ndarray:
    """Anchors of ``(N, 4)`` boxes by a zone's ``anchor`` rule (``(N, 2)`` points are returned as they are)."""
    if pts.shape[1] == 2:
        return pts
    x = (pts[:, 0] + pts[:, 2]) / 2.0
    y = pts[:, 3] if anchor == "bottom_center" else (pts[:, 1] + pts[:, 3]) / 2.0
    return np.stack([x, y], axis=1)


def _segment_may_touch(p0: Point, p1: Point, bbox: tuple[float, float, float, float]) -> bool:
    """Cheap reject before :func:`segment_through_polygon`: does the segment's bounding box meet ``bbox``?"""
    return not (max(p0[0], p1[0]) < bbox[0] or min(p0[0], p1[0]) > bbox[2]
                or max(p0[1], p1[1]) < bbox[1] or min(p0[1], p1[1]) > bbox[3])


def segment_through_polygon(p0: Point, p1: Point, polygon: np.ndarray) -> tuple[float, float] | None:
    """Where segment P0->P1 first enters and last leaves the polygon's interior, as fractions of
    its length (0 at P0, 1 at P1); ``None`` if it never passes through the interior.

    Example:
        >>> segment_through_polygon((0, 5), (40, 5), np.array([(10, 0), (20, 0), (20, 10), (10, 10)]))
        (0.25, 0.5)
    """
    a = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    e = np.roll(a, -1, axis=0) - a
    q0 = np.asarray(p0, dtype=np.float64)
    d = np.asarray(p1, dtype=np.float64) - q0
    w = a - q0
    den = d[0] * e[:, 1] - d[1] * e[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (w[:, 0] * e[:, 1] - w[:, 1] * e[:, 0]) / den
        u = (w[:, 0] * d[1] - w[:, 1] * d[0]) / den
    ok = (den != 0) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    cuts = np.unique(np.concatenate([[0.0, 1.0], t[ok]]))
    mids = (cuts[:-1] + cuts[1:]) / 2.0
    inside = np.flatnonzero(points_in_polygon(q0 + mids[:, None] * d, a))
    if len(inside) == 0:
        return None
    return float(cuts[inside[0]]), float(cuts[inside[-1] + 1])


class ZoneTracker:
    """Zone events of one camera's tracks (see the module docstring for the rules)."""

    def __init__(self, camera_id: str, zones: Sequence[ZoneConfig], defaults: ZonesConfig | None = None) -> None:
        self.camera_id = camera_id
        defaults = defaults or ZonesConfig()
        compiled = [_Zone(z, z.rules(defaults), np.asarray(z.polygon, dtype=np.float64), z.service_segment)
                    for z in zones]
        self._exclude = [z for z in compiled if z.cfg.kind == "exclude"]
        self.zones = [z for z in compiled if z.cfg.kind != "exclude"]
        self._forget_after_ms = max((z.rules.lost_ms for z in self.zones), default=0)
        self._tracks: dict[int, _Track] = {}
        self._raw = {z.id: 0 for z in self.zones}

    # -- queries -----------------------------------------------------------------------------

    def occupancy(self, raw: bool = False) -> dict[str, int]:
        """People per zone: open visits (inertia applied), or with ``raw`` anchors inside in the last frame."""
        if raw:
            return dict(self._raw)
        return {z: len(ids) for z, ids in self.inside().items()}

    @property
    def max_lost_ms(self) -> int:
        """The longest ``lost_after_ms`` of the zones: how long a track unseen inside still counts in a zone
        (and the longest :class:`ZoneBuckets` holds a frame's occupancy, see there)."""
        return self._forget_after_ms

    @property
    def max_delay_ms(self) -> int:
        """How long before the frame that confirms it an event may be dated, at most (entry, exit and lost
        inertia; a lost exit is dated at the last seen time, ``lost_after_ms`` before)."""
        return max((max(z.rules.enter_after_ms, z.rules.exit_after_ms, z.rules.lost_ms) for z in self.zones),
                   default=0)

    def stopper_after_ms(self) -> dict[str, int]:
        """Per ``shelf`` zone: the dwell that makes a visit a stopper (for :class:`ZoneBuckets`)."""
        return {z.id: int(z.rules.stopper_after_s * 1000) for z in self.zones if z.cfg.kind == "shelf"}

    def inside(self) -> dict[str, list[int]]:
        """Track ids with an open visit, per zone."""
        out: dict[str, list[int]] = {z.id: [] for z in self.zones}
        for tid, tr in self._tracks.items():
            for zid, v in tr.zones.items():
                if v.inside:
                    out[zid].append(tid)
        return {z: sorted(ids) for z, ids in out.items()}

    # -- state -------------------------------------------------------------------------------

    def state(self) -> dict:
        """JSON-serialisable state; :meth:`load_state` of it continues exactly where this stands."""
        names = [f.name for f in fields(_Visit)]
        return {
            "tracks": {str(t): [tr.ts_ms, tr.seq, {z: [getattr(v, n) for n in names] for z, v in tr.zones.items()}]
                       for t, tr in self._tracks.items()},
            "raw": dict(self._raw),
        }

    def load_state(self, state: dict) -> None:
        known = {z.id for z in self.zones}

        def visit(values: list) -> _Visit:
            v = _Visit(*values)
            v.out_pt = None if v.out_pt is None else (float(v.out_pt[0]), float(v.out_pt[1]))
            v.last_in = None if v.last_in is None else (float(v.last_in[0]), float(v.last_in[1]))
            return v

        self._tracks = {
            int(t): _Track(int(ts), int(seq), {z: visit(v) for z, v in zones.items() if z in known})
            for t, (ts, seq, zones) in state.get("tracks", {}).items()
        }
        self._raw = {z: int(state.get("raw", {}).get(z, 0)) for z in known}

    # -- frames ------------------------------------------------------------------------------

    def update(
        self,
        seq: int,
        ts_ms: int,
        track_ids: Iterable[int],
        anchors: np.ndarray | Sequence[Sequence[float]],
    ) -> list[ZoneEvent]:
        """Feed one frame's tracks: ids and anchors ``(N, 2)`` or boxes ``(N, 4)`` x1,y1,x2,y2.

        Returns the events this frame confirms, in order: exits of tracks not
        in the frame first, then per track (input order) per zone (config order).
        """
        ids = [int(t) for t in track_ids]
        arr = np.asarray(anchors, dtype=np.float64)
        cols = arr.shape[-1] if arr.ndim == 2 and len(ids) else 2
        if cols not in (2, 4):
            raise ValueError(f"anchors must be (N, 2) points or (N, 4) boxes, got shape {arr.shape}")
        pts = arr.reshape(-1, cols)
        if len(ids) != len(pts):
            raise ValueError(f"{len(ids)} track ids but {len(pts)} anchors")
        keep = np.ones(len(ids), dtype=bool)
        for z in self._exclude:
            keep &= ~points_in_polygon(zone_anchors(pts, z.rules.anchor), z.poly)
        present = {tid: i for i, tid in enumerate(ids) if keep[i]}
        events: list[ZoneEvent] = []
        for tid in [t for t in self._tracks if t not in present]:
            tr = self._tracks[tid]
            for z in self.zones:
                events += self._absent(z, tid, tr, ts_ms)
            if ts_ms - tr.ts_ms > self._forget_after_ms:
                del self._tracks[tid]
        per_zone = []
        for z in self.zones:
            zpts = zone_anchors(pts, z.rules.anchor)
            inside = points_in_polygon(zpts, z.poly) if len(pts) else np.zeros(0, dtype=bool)
            per_zone.append((z, zpts, inside))
            self._raw[z.id] = int(np.count_nonzero(inside & keep))
        heights = pts[:, 3] - pts[:, 1] if cols == 4 else None
        for tid, i in present.items():
            tr = self._tracks.get(tid) or _Track(ts_ms, seq)
            h = None if heights is None else float(heights[i])
            for z, zpts, inside in per_zone:
                p = (float(zpts[i, 0]), float(zpts[i, 1]))
                events += self._observe(z, tid, tr, p, bool(inside[i]), ts_ms, seq, h)
            tr.ts_ms, tr.seq = ts_ms, seq
            self._tracks[tid] = tr
        return events

    def close(self) -> list[ZoneEvent]:
        """End every open visit (end of a file): pending exits at their first outside time, the rest ``lost``."""
        events: list[ZoneEvent] = []
        for tid, tr in self._tracks.items():
            for z in self.zones:
                v = tr.zones.get(z.id)
                if v is not None and v.inside:
                    events.append(self._exit_now(z, tid, tr, v))
        self._tracks.clear()
        return events

    # -- rules -------------------------------------------------------------------------------

    def _event(self, z: _Zone, tid: int, kind: EventKind, ts: int, seq: int,
               dwell: int | None = None, how: str | None = None) -> ZoneEvent:
        return ZoneEvent(zone_event_id(self.camera_id, z.id, tid, kind, seq), self.camera_id, z.id, tid,
                         kind, int(ts), int(seq), None if dwell is None else int(dwell), how)  # type: ignore[arg-type]

    def _exit(self, z: _Zone, tid: int, v: _Visit, ts: int, seq: int, how: str) -> ZoneEvent:
        v.inside, v.pend_ts, v.pend_how, v.out_pt = False, None, None, None
        return self._event(z, tid, "exit", ts, seq, ts - v.enter_ts, how)

    def _exit_now(self, z: _Zone, tid: int, tr: _Track, v: _Visit) -> ZoneEvent:
        if v.pend_ts is not None:
            return self._exit(z, tid, v, v.pend_ts, v.pend_seq, v.pend_how or "other")
        return self._exit(z, tid, v, tr.ts_ms, tr.seq, "lost")

    def _absent(self, z: _Zone, tid: int, tr: _Track, ts: int) -> list[ZoneEvent]:
        v = tr.zones.get(z.id)
        if v is None:
            return []
        wait = z.rules.exit_after_ms
        if not v.inside:
            if ts - tr.ts_ms > wait:
                v.pend_ts, v.out_pt = None, None  # gone: forget an unconfirmed entry and where it was
            return []
        if v.pend_ts is not None:  # last seen outside: a real exit, as soon as exit_after_ms has passed
            return [self._exit_now(z, tid, tr, v)] if ts - v.pend_ts >= wait else []
        if ts - tr.ts_ms > z.rules.lost_ms:  # last seen inside, hidden for longer than lost_after_ms
            return [self._exit_now(z, tid, tr, v)]
        return []

    def _how(self, z: _Zone, p_in: Point | None, p_out: Point) -> str:
        if z.service is not None and p_in is not None and segments_intersect(p_in, p_out, *z.service):
            return "service_edge"
        return "other"

    def _observe(self, z: _Zone, tid: int, tr: _Track, p: Point, is_in: bool, ts: int, seq: int,
                 box_h: float | None = None) -> list[ZoneEvent]:
        v = tr.zones.setdefault(z.id, _Visit())
        r = z.rules
        if not v.inside:
            if not is_in:
                events = self._pass_through(z, tid, v, p, ts, seq, box_h)
                v.pend_ts, v.out_pt, v.out_ts = None, p, ts
                return events
            if v.pend_ts is None:
                v.pend_ts, v.pend_seq = ts, seq
            if ts - v.pend_ts < r.enter_after_ms:
                return []
            v.inside, v.enter_ts, v.enter_seq, v.last_in, v.loitered = True, v.pend_ts, v.pend_seq, p, False
            v.pend_ts = v.out_pt = None
            return [self._event(z, tid, "enter", v.enter_ts, v.enter_seq)]
        if is_in:
            v.pend_ts, v.pend_how, v.last_in = None, None, p
            loiter_ms = r.loiter_after_s * 1000.0
            if loiter_ms > 0 and not v.loitered and ts - v.enter_ts >= loiter_ms:
                v.loitered = True
                return [self._event(z, tid, "loiter", ts, seq, ts - v.enter_ts)]
            return []
        if v.pend_ts is None:
            v.pend_ts, v.pend_seq, v.pend_how = ts, seq, self._how(z, v.last_in, p)
        if ts - v.pend_ts < r.exit_after_ms:
            return []
        event = self._exit(z, tid, v, v.pend_ts, v.pend_seq, v.pend_how or "other")
        v.out_pt, v.out_ts = p, ts
        return [event]

    def _pass_through(self, z: _Zone, tid: int, v: _Visit, p1: Point, ts: int, seq: int,
                      box_h: float | None = None) -> list[ZoneEvent]:
        """A visit too short for the entry inertia, or not seen at all: the path from the last outside
        anchor to this one passes through the interior, for at least the least chord (see the module
        docstring)."""
        if v.out_pt is None or not _segment_may_touch(v.out_pt, p1, z.bbox):
            return []
        cut = segment_through_polygon(v.out_pt, p1, z.poly)
        if cut is None:
            return []
        least = z.area_per_perimeter if box_h is None else min(MIN_PASS_CHORD_H * box_h, z.area_per_perimeter)
        if (cut[1] - cut[0]) * float(np.hypot(p1[0] - v.out_pt[0], p1[1] - v.out_pt[1])) < least:
            return []
        t_in, t_out = (int(round(v.out_ts + c * (ts - v.out_ts))) for c in cut)
        # A visit like any other (every zone kind counts it), but never a served one: whoever crosses a queue
        # and its service edge between two samples, or faster than enter_after_ms, walked past the till.
        return [self._event(z, tid, "enter", t_in, seq),
                self._event(z, tid, "exit", t_out, seq, t_out - t_in, "other")]


# -- queues ------------------------------------------------------------------------------------

#: The least time the stream must have shown of a queue's window (or the whole window, if shorter) before
#: :meth:`QueueStats.compute` predicts a wait: a few seconds after a start or a stall, one person served
#: would give a throughput of one per few seconds.
MIN_QUEUE_COVERED_MS = 30_000


class StreamCoverage:
    """The time a camera's stream showed, from its frame times (in time order): each frame holds until the
    next one, at most ``max_gap_ms`` (the rule of :class:`ZoneBuckets`' covered time), so a start or a stall
    is not covered time. :meth:`for_zones` gives a camera's.

    Example (frames 0-10 s, a stall, frames again from 60 s; a 30 s window ending at 70 s):
        >>> c = StreamCoverage(max_gap_ms=2_000)
        >>> for t in [*range(0, 10_001, 1_000), *range(60_000, 70_001, 1_000)]:
        ...     c.add(t)
        >>> c.covered_ms(70_000, 30_000), c.covered_ms(70_000, 300_000)
        (10000, 22000)
    """

    def __init__(self, max_gap_ms: int, runs: Iterable[Sequence[int]] = ()) -> None:
        self.max_gap_ms = int(max_gap_ms)
        #: ``[first, last]`` frame times of each run of frames no more than ``max_gap_ms`` apart
        self.runs: list[list[int]] = [[int(a), int(b)] for a, b in runs]

    @classmethod
    def for_zones(cls, zones: Sequence[ZoneConfig], defaults: ZonesConfig) -> "StreamCoverage":
        """A camera's: frames further apart than its zones' longest ``lost_after_ms`` (a person unseen that long
        is lost, not served: :attr:`ZoneTracker.max_lost_ms`), and at least the default's 2.4 s, are a stall."""
        return cls(max(ZoneTracker("", zones, defaults).max_lost_ms, LOST_AFTER_MS))

    def add(self, ts_ms: int) -> None:
        if self.runs and ts_ms - self.runs[-1][1] <= self.max_gap_ms:
            self.runs[-1][1] = max(self.runs[-1][1], int(ts_ms))
        else:
            self.runs.append([int(ts_ms), int(ts_ms)])

    def covered_ms(self, now_ms: int, window_ms: int) -> int:
        """Covered time of ``(now_ms - window_ms, now_ms]`` (a run's last frame holds ``max_gap_ms``, up to now)."""
        lo = now_ms - window_ms
        return sum(max(0, min(last + self.max_gap_ms, now_ms) - max(first, lo)) for first, last in self.runs)

    def forget(self, before_ms: int) -> None:
        """Drop the runs that cover nothing from ``before_ms`` on."""
        self.runs = [r for r in self.runs if r[1] + self.max_gap_ms > before_ms]


@dataclass(frozen=True)
class QueueStats:
    """A queue zone over the window ``(now_ms - window_ms, now_ms]`` (exits by their time).

    Example (3 in the queue now; 4 served in the last 5 minutes -> 0.8 per minute
    -> a newcomer waits about 3 / 0.8 = 3.75 minutes; had the stream started 60 s ago,
    4 per minute -> 45 s):
        >>> ev = [ZoneEvent(f"e{i}", "cam", "q", i, "exit", 60_000 * i, i, 90_000, "service_edge") for i in (1, 2, 3, 4)]
        >>> s = QueueStats.compute(ev, "q", now_ms=300_000, window_ms=300_000, length=3)
        >>> s.served, s.abandoned, s.predicted_wait_ms
        (4, 0, 225000)
        >>> QueueStats.compute(ev, "q", 300_000, 300_000, length=3, covered_ms=60_000).predicted_wait_ms
        45000
    """

    zone_id: str
    now_ms: int
    window_ms: int
    length: int
    served: int
    abandoned: int
    lost: int
    waits_ms: tuple[int, ...]
    predicted_wait_ms: int | None
    #: The time the service rate is over: the window, or less when the stream showed less of it
    rate_ms: int = 0

    @classmethod
    def compute(cls, events: Iterable[ZoneEvent], zone_id: str, now_ms: int, window_ms: int,
                length: int, covered_ms: int | None = None) -> "QueueStats":
        """``length``: people in the queue now (``ZoneTracker.occupancy()[zone_id]``); ``covered_ms``: the time
        the stream showed in the window (:meth:`StreamCoverage.covered_ms`; ``None``: all of it)."""
        exits = [e for e in events if e.zone_id == zone_id and e.kind == "exit"
                 and now_ms - window_ms < e.ts_ms <= now_ms]
        waits = tuple(int(e.dwell_ms or 0) for e in exits if e.how == "service_edge")
        served = len(waits)
        rate_ms = window_ms if covered_ms is None else max(0, min(window_ms, int(covered_ms)))
        # Little's law: W = L / lambda, lambda = served / the time the stream showed of the window
        enough = rate_ms >= min(window_ms, MIN_QUEUE_COVERED_MS)
        predicted = int(round(length * rate_ms / served)) if served and enough else None
        return cls(zone_id, now_ms, window_ms, length, served,
                   sum(e.how == "other" for e in exits), sum(e.how == "lost" for e in exits), waits, predicted,
                   rate_ms)


# -- buckets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZoneBucketStats:
    zone_id: str
    start_ms: int
    visits: int  # entries in the bucket
    unique_people: int  # distinct track ids inside during the bucket (or entering in it)
    mean_occupancy: float  # time-weighted over the covered time: each frame's open visits hold until the next
    # frame, at most max_hold_ms, each from its entry time to its exit time (its dwell: the inertia's time before
    # the frames that confirmed them is put in or taken out then); a bucket with no covered time: the mean of its
    # frames' counts, or 0 without any
    max_occupancy: int  # of the frames in the bucket and the holds into it (0 without any)
    exits: int  # visits that ended in the bucket, whose dwells give:
    dwell_median_ms: float | None
    dwell_p90_ms: float | None  # numpy's default (linear) percentile
    stoppers: int | None = None  # shelf zones: ended visits that lasted stopper_after_s or longer
    served: int = 0  # exits through the service edge (queue zones)
    abandoned: int = 0  # queue zones: exits another way ("other")
    lost: int = 0  # tracks lost inside
    # the time of the bucket the stream showed, which mean_occupancy is over (the weight of this bucket's mean
    # in a mean over several buckets); less than the bucket when the stream stalled, started or ended in it
    covered_ms: int = 0


@dataclass
class _Bucket:
    area: float = 0.0  # integral of occupancy over time (person-ms)
    covered_ms: int = 0
    frames: int = 0
    occ_sum: int = 0
    occ_max: int = 0
    visits: int = 0
    people: set[int] = field(default_factory=set)
    dwells: list[int] = field(default_factory=list)
    hows: dict[str, int] = field(default_factory=dict)


class ZoneBuckets:
    """Per zone and tumbling time bucket statistics, fed frame by frame from a :class:`ZoneTracker`.

    ``stopper_after_ms`` (:meth:`ZoneTracker.stopper_after_ms`) adds the stoppers of shelf zones.

    ``max_hold_ms``: a frame's occupancy holds until the next frame, at most this long (``None``: no
    limit); the rest of a longer gap (a stalled stream) is not covered time: it adds neither to the mean
    nor to the max, and a bucket inside such a gap has no statistics (none at all, or mean and max 0 when
    an event is dated in it). Give it at least the zones'
    ``lost_after_ms`` (:attr:`ZoneTracker.max_lost_ms`, what the analytics stage gives): the tracker
    counts an unseen person inside that long, and a track found lost is taken out of the occupancy from
    its last seen time to the end of what the previous frame held (every gap before that one is shorter).

    Example (one person inside from 0 to 30 s of a 60 s bucket):
        >>> b = ZoneBuckets(bucket_s=60)
        >>> enter = ZoneEvent("e", "cam", "z", 1, "enter", 0, 0)
        >>> exit_ = ZoneEvent("x", "cam", "z", 1, "exit", 30_000, 3, 30_000, "other")
        >>> b.add(0, {"z": [1]}, [enter]); b.add(30_000, {"z": []}, [exit_]); b.add(60_000, {"z": []})
        >>> s = b.stats()[0]
        >>> s.visits, s.unique_people, s.mean_occupancy, s.max_occupancy, s.dwell_median_ms
        (1, 1, 0.5, 1, 30000.0)
    """

    def __init__(self, bucket_s: float = 60, stopper_after_ms: Mapping[str, int] | None = None,
                 max_hold_ms: int | None = None) -> None:
        self.bucket_ms = int(bucket_s * 1000)
        self.stopper_after_ms = dict(stopper_after_ms or {})
        self.max_hold_ms = max_hold_ms
        self._b: dict[tuple[str, int], _Bucket] = {}
        self._last: tuple[int, dict[str, int]] | None = None
        #: The buckets of an ended stream's last frame (:meth:`end`), closed but continued by a next stream's
        #: frame or event in them (:meth:`_bucket`), until the frames close past them (:meth:`close`).
        self._ended: dict[tuple[str, int], _Bucket] = {}
        #: The time of the ended stream's last frame: a next stream whose first frame is before it (a file
        #: re-pointed to another of the same start time) starts its buckets afresh (:meth:`add`).
        self._ended_ts: int | None = None

    def _bucket(self, zone_id: str, ts: int) -> _Bucket:
        key = (zone_id, ts // self.bucket_ms * self.bucket_ms)
        b = self._b.get(key)
        if b is None:  # a bucket an ended stream closed goes on with what it had (its row is given again, whole)
            b = self._b[key] = self._ended.pop(key, None) or _Bucket()
        return b

    def add(self, ts_ms: int, inside: Mapping[str, Iterable[int]], events: Iterable[ZoneEvent] = ()) -> None:
        """One frame: ``inside`` = :meth:`ZoneTracker.inside`, ``events`` = what its update returned."""
        if self._ended_ts is not None:  # a next stream's first frame: only one going forward continues the buckets
            if ts_ms < self._ended_ts:
                self._ended = {}
            self._ended_ts = None
        held_to = ts_ms  # the end of what the previous frame's occupancy holds
        held_from, held = self._last if self._last is not None else (ts_ms, {})
        if self._last is not None:
            t0, occ = self._last
            if self.max_hold_ms is not None:
                held_to = min(ts_ms, t0 + self.max_hold_ms)
            while t0 < held_to:  # hold the previous frame's occupancy until now (capped), split at bucket ends
                t1 = min(held_to, (t0 // self.bucket_ms + 1) * self.bucket_ms)
                for zid, n in occ.items():
                    b = self._bucket(zid, t0)
                    b.area += n * (t1 - t0)
                    b.covered_ms += t1 - t0
                    b.occ_max = max(b.occ_max, n)
                t0 = t1
        occ = {}
        for zid, ids in inside.items():
            ids = list(ids)
            b = self._bucket(zid, ts_ms)
            b.frames += 1
            b.occ_sum += len(ids)
            b.occ_max = max(b.occ_max, len(ids))
            b.people.update(ids)
            occ[zid] = len(ids)
        self._last = (ts_ms, occ)
        entered: dict[str, int] = {}
        for e in events:
            # the visit runs from its first inside to its first outside (or last seen) time, like its dwell: an
            # entry confirmed now adds one person from its time, an exit takes them back from its own
            if e.kind in ("enter", "exit") and e.ts_ms < held_to:
                if e.kind == "enter":  # also in the max: the held people and the entries confirmed now
                    entered[e.zone_id] = entered.get(e.zone_id, 0) + 1
                    self._unhold(e.zone_id, e.ts_ms, held_to, 1, held_from,
                                 (held.get(e.zone_id, 0) + entered[e.zone_id], entered[e.zone_id]))
                else:
                    self._unhold(e.zone_id, e.ts_ms, held_to, -1)
            b = self._bucket(e.zone_id, e.ts_ms)
            if e.kind == "enter":
                b.visits += 1
                b.people.add(e.track_id)
            elif e.kind == "exit":
                b.dwells.append(int(e.dwell_ms or 0))
                b.hows[e.how or "other"] = b.hows.get(e.how or "other", 0) + 1

    def _unhold(self, zone_id: str, t0: int, t1: int, people: int = -1, held_from: int | None = None,
                at_least: tuple[int, int] = (0, 0)) -> None:
        """``people`` more (default one fewer) in the time-weighted occupancy over ``[t0, t1)``: an exit (its
        open visit was held from its first outside, or last seen, time until the frame that confirmed it, or as
        long as the previous frame's occupancy held) or an entry (confirmed after the inertia, from its first
        inside time). ``at_least``: the max occupancy of the buckets touched from ``held_from`` on (the previous
        frame's hold: its people and the entries), and of those before it (the entries)."""
        while t0 < t1:
            start = t0 // self.bucket_ms * self.bucket_ms
            end = min(t1, start + self.bucket_ms)
            b = self._b.get((zone_id, start))
            if b is not None:  # (a bucket already closed keeps its statistics)
                b.area += people * (end - t0)
                b.occ_max = max(b.occ_max, at_least[0] if held_from is not None and end > held_from else at_least[1])
            t0 = end

    @staticmethod
    def _rows(buckets: dict[tuple[str, int], _Bucket]) -> list[list]:
        return [[zid, start, b.area, b.covered_ms, b.frames, b.occ_sum, b.occ_max, b.visits,
                 sorted(b.people), list(b.dwells), dict(b.hows)] for (zid, start), b in buckets.items()]

    @staticmethod
    def _load_rows(rows: Iterable[list]) -> dict[tuple[str, int], _Bucket]:
        return {(zid, int(start)): _Bucket(float(area), int(covered), int(frames), int(occ_sum), int(occ_max),
                                           int(visits), {int(p) for p in people}, [int(d) for d in dwells],
                                           {k: int(v) for k, v in hows.items()})
                for zid, start, area, covered, frames, occ_sum, occ_max, visits, people, dwells, hows in rows}

    def state(self) -> dict:
        """JSON-serialisable state; :meth:`load_state` of it continues exactly where this stands."""
        return {
            "buckets": self._rows(self._b),
            "last": None if self._last is None else [self._last[0], dict(self._last[1])],
            "ended": self._rows(self._ended),
            "ended_ts": self._ended_ts,
        }

    def load_state(self, state: dict) -> None:
        self._b = self._load_rows(state.get("buckets", []))
        self._ended = self._load_rows(state.get("ended", []))  # none in a state saved before it was kept
        ended_ts = state.get("ended_ts")
        self._ended_ts = None if ended_ts is None else int(ended_ts)
        last = state.get("last")
        self._last = None if last is None else (int(last[0]), {k: int(v) for k, v in last[1].items()})

    def close(self, before_ms: int | None = None) -> list[ZoneBucketStats]:
        """Statistics of the buckets that end at or before ``before_ms`` (all with ``None``), forgotten here.

        A caller closes a bucket once no event can be dated in it any more (events are
        dated up to the zone's inertia before the frame that confirms them).
        """
        keys = [k for k in self._b if before_ms is None or k[1] + self.bucket_ms <= before_ms]
        out = self.stats(keys)
        for k in keys:
            del self._b[k]
        if before_ms is not None:  # the frames have moved past an ended stream's last buckets: closed for good
            self._ended = {k: b for k, b in self._ended.items() if k[1] + self.bucket_ms > before_ms}
        return out

    def end(self) -> list[ZoneBucketStats]:
        """The stream ended (after its last frame's :meth:`add`): statistics of every open bucket (:meth:`close`).

        Nothing of the ended stream holds on: a next stream's first frame (a file re-pointed to another, a
        restarted source) holds no occupancy of its last frame, so no bucket of the ended stream's time is made
        again (an empty row in place of the real one). The buckets of the last frame's time are kept aside: a
        next stream going forward from there (its first frame at or after the last one: a restarted source, the
        same file read on) continues one of them with its frames or events in it (its row, given again when it
        closes, has both streams' statistics) rather than starting it afresh (a row of the new stream's part
        only); a later :meth:`close` past them forgets them. A next stream that goes back in time (a file
        re-pointed to another of the same start time) starts its buckets afresh: its rows replace the ended
        stream's, as its earlier buckets' do. Kept in this object's state only: the embedded mode's next run (a
        new process) starts without them, its row of that bucket replacing the ended run's.
        """
        end_ts = None if self._last is None else self._last[0]
        self._last = None
        ended = {k: b for k, b in self._b.items()
                 if end_ts is not None and k[1] == end_ts // self.bucket_ms * self.bucket_ms}
        out = self.close()
        self._ended, self._ended_ts = ended, end_ts if ended else None
        return out

    def stats(self, keys: Iterable[tuple[str, int]] | None = None) -> list[ZoneBucketStats]:
        """Every bucket with a frame or an event (or those of ``keys``), by zone and start time."""
        out = []
        chosen = sorted(self._b) if keys is None else sorted(keys)
        for zid, start in chosen:
            b = self._b[(zid, start)]
            if b.covered_ms:
                mean = b.area / b.covered_ms
            else:
                mean = b.occ_sum / b.frames if b.frames else 0.0
            med, p90 = (float(x) for x in np.percentile(b.dwells, [50, 90])) if b.dwells else (None, None)
            limit = self.stopper_after_ms.get(zid)
            stoppers = None if limit is None else sum(d >= limit for d in b.dwells)
            out.append(ZoneBucketStats(zid, start, b.visits, len(b.people), mean, b.occ_max,
                                       len(b.dwells), med, p90, stoppers, b.hows.get("service_edge", 0),
                                       b.hows.get("other", 0), b.hows.get("lost", 0), b.covered_ms))
        return out
