"""Line crossing, occupancy and windowed counts: pure logic, returns events.

Convention: for a line A->B in image coordinates (x right, y down), a track
whose anchor (bottom-centre of its box) crosses the segment from the
left-hand side of A->B to its right-hand side counts as ``in``; the other way
is ``out``. For A=(0,300), B=(640,300), moving down the image is ``in``.

Rules (each is a case in ``tests/test_counting.py``):

* **Segment intersection, not a band.** A crossing needs the anchor's path
  between successive positions to intersect the segment A-B, so a fast track
  that skips past a thin line between frames still counts, and a track that
  walks around the end of the segment does not.
* **Hysteresis.** The anchor must also reach ``hysteresis_px`` beyond the line
  on the new side, or ``hysteresis_heights`` of its box's height when that is
  more (with box heights), so the dead zone grows with the person's size in
  the image. People standing on the line (jittering boxes) and U-turns that
  touch the line and go back never count. A track's first side (where it
  starts, or restarts after a step that is not walking) is taken as soon as
  its anchor is ``hysteresis_px`` off the line: someone first seen just off
  the line who then walks across it counts.
* **One committed side per track and line.** Counts happen only on a change
  of committed side, so a track that crosses and comes back counts ``in``
  then ``out`` (net zero), never ``in`` twice.
* **Lost and re-acquired tracks.** A track that disappears keeps its state for
  ``refind_window_ms`` (the tracker's own re-find window, at least
  ``reacquire_window_ms``): if it returns under the same id the gap is treated
  as one step. Within ``reacquire_window_ms``, if a *new* id starts within
  ``reacquire_radius_heights`` of the lost track's box height
  (``reacquire_radius_px`` when the caller gives no box sizes) of where it
  vanished, the new id inherits the state, so an id switch at the door
  neither double-counts nor loses the crossing. Only a
  *new* id: one seen as stationary (``still_ids``: a mannequin, someone
  standing since their track began) within ``reacquire_window_ms`` was there
  all along, so when it starts to move it is its own track and takes no lost
  track's state (it would otherwise count the crossing of a passer-by who
  vanished near it). Nor does a track lost while stationary hand its state on:
  the passer-by who hides a mannequin is not the mannequin.
* **Steps that are not walking** (with box heights). A step whose box height
  changes by more than ``max_height_ratio``, or whose anchor moves further than
  ``max_step_heights`` plus ``max_speed_heights_per_s`` per second since the
  track was last seen (in box heights), is a box that snapped to another
  object (a mannequin behind the person, a box grown over both), not a person
  walking: it counts nothing, and the track's side of each line restarts from
  where its box now is. So does a step longer than ``max_step_heights`` in
  which the box itself hardly moved (less than ``min_box_move_share`` of its
  anchor's move): the box grew or shrank at its bottom edge while its top edge
  stayed, as when a person standing in front of a mannequin merges with it into
  one box. The anchor is the box's bottom centre (the box's top is the anchor's
  y minus its height).

Example:
    >>> from storelens.config import LineConfig, CountingConfig
    >>> lc = LineCounter("cam", [LineConfig(id="door", a=(0, 300), b=(640, 300))], CountingConfig())
    >>> lc.update(seq=0, ts_ms=0, track_ids=[7], anchors=[(320, 250)])
    []
    >>> [e.direction for e in lc.update(seq=1, ts_ms=40, track_ids=[7], anchors=[(320, 350)])]
    ['in']
    >>> lc.counts()["door"]
    {'in': 1, 'out': 0}
"""
from __future__ import annotations

import bisect
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping, NamedTuple, Sequence

import numpy as np

from storelens.contract import messages as m
from storelens.config import CountingConfig, LineConfig
from storelens.domain.calendar import StoreCalendar, first_instant_at
from storelens.domain.geometry import segments_intersect, signed_distance

Dir = Literal["in", "out"]


@dataclass(frozen=True)
class CrossingEvent:
    event_id: str
    camera_id: str
    line_id: str
    track_id: int
    direction: Dir
    ts_ms: int
    seq: int

    def to_proto(self) -> m.LineCrossing:
        return m.LineCrossing(
            event_id=self.event_id,
            camera_id=self.camera_id,
            line_id=self.line_id,
            track_id=self.track_id,
            direction=m.DIRECTION_IN if self.direction == "in" else m.DIRECTION_OUT,
            ts_ms=self.ts_ms,
            seq=self.seq,
        )

    @classmethod
    def from_proto(cls, msg: m.LineCrossing) -> "CrossingEvent":
        return cls(msg.event_id, msg.camera_id, msg.line_id, msg.track_id,
                   "in" if msg.direction == m.DIRECTION_IN else "out", msg.ts_ms, msg.seq)


def crossing_event_id(camera_id: str, line_id: str, track_id: int, seq: int) -> str:
    """Deterministic id: the same crossing recomputed after a redelivery has the same id."""
    return f"{camera_id}:{line_id}:{track_id}:{seq}"


@dataclass
class _LineState:
    side: int = 0  # committed side: +1 right (in side), -1 left, 0 not yet known
    through_segment: bool = False  # path went through A-B since leaving the committed side


@dataclass
class _TrackState:
    anchor: tuple[float, float]
    ts_ms: int
    lines: dict[str, _LineState] = field(default_factory=dict)
    height: float = 0.0  # box height (px) at ``anchor``; 0: not given


class LineCounter:
    """Counts crossings of one camera's lines from per-frame track anchors."""

    def __init__(self, camera_id: str, lines: Sequence[LineConfig], counting: CountingConfig) -> None:
        self.camera_id = camera_id
        self.lines = list(lines)
        self.cfg = counting
        self._tracks: dict[int, _TrackState] = {}
        self._lost: dict[int, _TrackState] = {}
        #: ids seen as stationary -> when last seen so (not new ids: they never re-acquire a lost state)
        self._still: dict[int, int] = {}
        self._counts = {ln.id: {"in": 0, "out": 0} for ln in self.lines}

    def counts(self) -> dict[str, dict[str, int]]:
        """Per line ``{"in": N, "out": N}`` since construction or the last :meth:`reset_counts`."""
        return {k: dict(v) for k, v in self._counts.items()}

    def reset_counts(self) -> None:
        """Every line's ins and outs restart from 0 (the store's occupancy reset: :class:`OccupancyReset`); each
        person's side of the lines stays, so a crossing under way still counts once."""
        self._counts = {ln.id: {"in": 0, "out": 0} for ln in self.lines}

    def set_counts(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Each line's ins and outs from ``counts`` (as :meth:`counts`; a line not in it: 0, a line not configured:
        dropped): the day's counts taken back from the history at the start of a process (the embedded mode)."""
        self._counts = {ln.id: {"in": int(counts.get(ln.id, {}).get("in", 0)),
                                "out": int(counts.get(ln.id, {}).get("out", 0))} for ln in self.lines}

    def state(self) -> dict:
        """JSON-serialisable state; :meth:`load_state` of it continues exactly where this stands.

        Example:
            >>> from storelens.config import LineConfig, CountingConfig
            >>> lines, cfg = [LineConfig(id="door", a=(0, 300), b=(640, 300))], CountingConfig()
            >>> a = LineCounter("cam", lines, cfg); _ = a.update(0, 0, [7], [(320, 250)])
            >>> b = LineCounter("cam", lines, cfg); b.load_state(a.state())
            >>> [e.direction for e in b.update(1, 40, [7], [(320, 350)])]
            ['in']
        """
        def track(st: _TrackState) -> list:
            return [st.anchor[0], st.anchor[1], st.ts_ms,
                    {k: [ls.side, ls.through_segment] for k, ls in st.lines.items()}, st.height]

        return {
            "tracks": {str(t): track(st) for t, st in self._tracks.items()},
            "lost": {str(t): track(st) for t, st in self._lost.items()},
            "still": {str(t): ts for t, ts in self._still.items()},
            "counts": self.counts(),
        }

    def load_state(self, state: dict) -> None:
        def track(v: list) -> _TrackState:
            return _TrackState((float(v[0]), float(v[1])), int(v[2]),
                               {k: _LineState(int(s), bool(f)) for k, (s, f) in v[3].items()},
                               float(v[4]) if len(v) > 4 else 0.0)  # a state saved before heights: unknown

        self._tracks = {int(t): track(v) for t, v in state.get("tracks", {}).items()}
        self._lost = {int(t): track(v) for t, v in state.get("lost", {}).items()}
        self._still = {int(t): int(ts) for t, ts in state.get("still", {}).items()}
        for line_id, c in state.get("counts", {}).items():
            if line_id in self._counts:  # lines removed from the config are dropped
                self._counts[line_id] = {"in": int(c["in"]), "out": int(c["out"])}

    def forget_lines(self, line_ids: set[str]) -> None:
        """Every track's side of these lines is forgotten (lines moved by a site edit): each person's side is taken
        afresh at their next frame, so nobody is counted for crossing where the line was, nor missed for having
        been on the far side of where it was."""
        for st in (*self._tracks.values(), *self._lost.values()):
            for line_id in line_ids:
                st.lines.pop(line_id, None)

    def update(
        self,
        seq: int,
        ts_ms: int,
        track_ids: Iterable[int],
        anchors: np.ndarray | Sequence[tuple[float, float]],
        still_ids: Iterable[int] = (),
        heights: Sequence[float] | np.ndarray | None = None,
    ) -> list[CrossingEvent]:
        """Feed one frame's tracks (ids and anchor points); return the crossings it completes.

        ``still_ids``: the frame's stationary tracks, which count nowhere; they are only remembered as
        not new (see *Lost and re-acquired tracks*). ``heights``: the tracks' box heights (px), in the order
        of ``track_ids``; with them the re-acquire radius is in box heights and implausible steps never
        count (see *Steps that are not walking*). With heights, ``anchors`` must be the boxes' bottom
        centres (as the analytics stage gives them): the top edge is taken as the anchor's y minus the height.
        """
        for tid in still_ids:
            self._still[int(tid)] = ts_ms
        ids = [int(t) for t in track_ids]
        pts = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
        if len(ids) != len(pts):
            raise ValueError(f"{len(ids)} track ids but {len(pts)} anchors")
        points = [(float(x), float(y)) for x, y in pts]
        hs = [0.0] * len(ids) if heights is None else [
            float(h) if math.isfinite(h) and h > 0 else 0.0 for h in np.asarray(heights, np.float64).reshape(-1)]
        if len(hs) != len(ids):
            raise ValueError(f"{len(ids)} track ids but {len(hs)} heights")
        # Tracks missing from this frame are lost *before* this frame's new ids are
        # matched, so an id switch between two consecutive frames is re-acquired.
        present = set(ids)
        for tid in [t for t in self._tracks if t not in present]:
            self._lost[tid] = self._tracks.pop(tid)
        self._expire(ts_ms)
        states: dict[int, _TrackState | None] = {}
        for tid in ids:
            if tid not in states:
                states[tid] = self._tracks.get(tid) or self._lost.pop(tid, None)
        rejoined = self._reacquire([(tid, p, h) for tid, p, h in zip(ids, points, hs)
                                    if states[tid] is None and tid not in self._still], ts_ms)
        states.update(rejoined)
        events: list[CrossingEvent] = []
        for tid, p1, h1 in zip(ids, points, hs):
            st = states[tid]
            if st is None:
                st = states[tid] = _TrackState(anchor=p1, ts_ms=ts_ms)
                p0 = None
            elif tid in rejoined or self._walked(st, p1, h1, ts_ms):  # a re-acquisition was checked there
                p0 = st.anchor
            else:  # not one person walking: no crossing on this step; each side restarts from here
                p0 = None
                for ls in st.lines.values():
                    ls.side, ls.through_segment = 0, False
            for line in self.lines:
                ev = self._step(line, st.lines.setdefault(line.id, _LineState()), p0, p1, h1, tid, ts_ms, seq)
                if ev is not None:
                    events.append(ev)
            st.anchor, st.ts_ms, st.height = p1, ts_ms, h1
            self._tracks[tid] = st
        return events

    def _walked(self, st: _TrackState, p1: tuple[float, float], h1: float, ts_ms: int) -> bool:
        """Whether the step from ``st`` to anchor ``p1`` with box height ``h1`` can be one person walking:
        the box about the same height, the anchor no further than a walk (or a run) from where it was, and
        the box itself moved, not only its bottom edge (:meth:`_box_moved`)."""
        h0 = st.height
        if h0 <= 0 or h1 <= 0:
            return True  # sizes not given: every step is a step
        if not self._same_size(h0, h1):
            return False
        dt_s = max(0, ts_ms - st.ts_ms) / 1000.0
        reach = (self.cfg.max_step_heights + self.cfg.max_speed_heights_per_s * dt_s) * (h0 + h1) / 2
        return math.hypot(p1[0] - st.anchor[0], p1[1] - st.anchor[1]) <= reach and self._box_moved(st, p1, h1)

    def _box_moved(self, st: _TrackState, p1: tuple[float, float], h1: float) -> bool:
        """Whether the box moved with its anchor from ``st`` to ``p1`` (height ``h1``): a step beyond
        ``max_step_heights`` whose box itself moved less than ``min_box_move_share`` of the anchor's move only
        grew or shrank at its bottom edge. The box's vertical move is the smaller of its bottom edge's (the
        anchor's) and its top edge's (the anchor's y minus the height) when both go the same way, else 0; its
        horizontal move is the anchor's. Unknown heights: True."""
        h0 = st.height
        if h0 <= 0 or h1 <= 0:
            return True
        dx, dy = p1[0] - st.anchor[0], p1[1] - st.anchor[1]
        step = math.hypot(dx, dy)
        if step <= self.cfg.max_step_heights * (h0 + h1) / 2:
            return True  # within the jitter of a box: its edges' moves say nothing
        dy_top = dy - (h1 - h0)
        box_dy = min(abs(dy), abs(dy_top)) if dy * dy_top > 0 else 0.0
        return math.hypot(dx, box_dy) >= self.cfg.min_box_move_share * step

    def _same_size(self, h0: float, h1: float) -> bool:
        """Box heights ``h0`` and ``h1`` (px) within ``max_height_ratio`` of each other; an unknown (0) one is."""
        return h0 <= 0 or h1 <= 0 or max(h1 / h0, h0 / h1) <= self.cfg.max_height_ratio

    def _step(self, line: LineConfig, ls: _LineState, p0, p1, h1: float, tid: int, ts_ms: int,
              seq: int) -> CrossingEvent | None:
        d = signed_distance(p1, line.a, line.b)
        if p0 is not None and segments_intersect(p0, p1, line.a, line.b):
            ls.through_segment = True
        if ls.side == 0:  # the first side: where the anchor is, past the jitter of hysteresis_px
            h = max(self.cfg.hysteresis_px, 1e-9)
            s0 = 1 if d >= h else (-1 if d <= -h else 0)
            if s0 != 0:
                ls.side, ls.through_segment = s0, False
            return None
        # a change of side: past the box's own jitter too (h1: its height at p1, 0 when unknown)
        h = max(self.cfg.hysteresis_px, self.cfg.hysteresis_heights * h1, 1e-9)
        s1 = 1 if d >= h else (-1 if d <= -h else 0)
        if s1 == ls.side:
            ls.through_segment = False  # back where it was: jitter or U-turn
            return None
        if s1 == 0:
            return None  # inside the hysteresis band: wait
        crossed = ls.through_segment
        ls.side, ls.through_segment = s1, False
        if not crossed:
            return None  # changed side around the end of the segment
        direction: Dir = "in" if s1 > 0 else "out"
        self._counts[line.id][direction] += 1
        return CrossingEvent(crossing_event_id(self.camera_id, line.id, tid, seq),
                             self.camera_id, line.id, tid, direction, ts_ms, seq)

    def _reacquire(self, new: list[tuple[int, tuple[float, float], float]], ts_ms: int) -> dict[int, _TrackState]:
        """Hand lost tracks' states to new ``(id, anchor, box height)`` at ``ts_ms``: closest pairs first, each
        state to one id at most, only a state lost within ``reacquire_window_ms`` (older ones wait for their own
        id only), only to a box of about the same height (``max_height_ratio``) that moved as a box
        (:meth:`_box_moved`) within the radius. A track
        lost while stationary (a mannequin hidden by a passer-by: seen stationary after its last move) hands
        its state to nobody."""
        pairs = []
        horizon = ts_ms - self.cfg.reacquire_window_ms
        for i, (tid, p, h) in enumerate(new):
            for lost_tid, st in self._lost.items():
                if st.ts_ms < horizon or self._still.get(lost_tid, -1) >= st.ts_ms:
                    continue
                if not self._same_size(st.height, h) or not self._box_moved(st, p, h):
                    continue
                dist = math.hypot(st.anchor[0] - p[0], st.anchor[1] - p[1])
                radius = (self.cfg.reacquire_radius_heights * st.height if st.height > 0
                          else self.cfg.reacquire_radius_px)
                if dist <= radius:
                    pairs.append((dist, i, lost_tid))
        taken: dict[int, _TrackState] = {}
        for _, i, lost_tid in sorted(pairs):
            tid = new[i][0]
            if tid not in taken and lost_tid in self._lost:
                taken[tid] = self._lost.pop(lost_tid)
        return taken

    def _expire(self, ts_ms: int) -> None:
        """Lost tracks are forgotten after ``refind_window_ms`` (their own id's return; at least
        ``reacquire_window_ms``), stationary sightings after ``reacquire_window_ms`` (they only matter to
        hand-overs to new ids)."""
        kept = ts_ms - max(self.cfg.refind_window_ms, self.cfg.reacquire_window_ms)
        for tid in [t for t, s in self._lost.items() if s.ts_ms < kept]:
            del self._lost[tid]
        horizon = ts_ms - self.cfg.reacquire_window_ms
        for tid in [t for t, seen in self._still.items() if seen < horizon]:
            del self._still[tid]


class OccupancyReset:
    """When the occupancy restarts from 0 (``store.occupancy_reset``): a people counter misses an exit now and
    then, so ins minus outs drifts up day after day unless it restarts at a time the store is empty.

    ``at``: minutes after local midnight (``"04:00"``: 240), ``"closing"`` or ``None`` (never). The resets are:

    * a local time: the first instant of each local day at which the store's clock shows it (on a fall-back day
      the first of the two, in a spring-forward gap the first instant after it: :func:`first_instant_at`);
    * ``"closing"``: the end of each business day's session (:meth:`StoreCalendar.session`: the closing time of
      ``opening_hours``, after midnight for a closing at or before the opening; none on a closed day; local
      midnight without opening hours). A calendar with no open day at all (``opening_hours: {}`` or every day
      closed: a store not opened yet) has no closing: it resets at each local midnight, as without opening
      hours, rather than never (the counts of people seen there, fitters or staff, would otherwise add up
      for ever). With any open day there is a closing every week, so a reset is always found (at most 8 days
      back): only ``None`` never resets.

    Counts that began after reset ``since_ms`` (:meth:`last_reset_ms` when they began) are void at ``ts_ms``
    (:meth:`stale`) once a later reset is at or before ``ts_ms``: time is the frames' own, so the first frame
    after a gap over the reset (no frames overnight) starts from 0, and a replay resets where live did.

    Example:
        >>> reset = OccupancyReset(StoreCalendar("Europe/Berlin"), 4 * 60)
        >>> t = 1774749600000  # 2026-03-29 04:00+02:00 (the spring-forward day)
        >>> reset.last_reset_ms(t) == t, reset.last_reset_ms(t - 1) == t - 23 * 3_600_000
        (True, True)
        >>> reset.stale(reset.last_reset_ms(t - 1), t - 1), reset.stale(reset.last_reset_ms(t - 1), t)
        (False, True)
    """

    def __init__(self, calendar: StoreCalendar, at: int | Literal["closing"] | None) -> None:
        self.calendar = calendar
        self.at = at
        #: The resets of the latest question's weeks around it (frames come in time order): the next ones look here.
        self._known: list[int] = []

    def _resets(self, first: dt.date, last: dt.date) -> list[int]:
        out: set[int] = set()
        at = self.at
        if at == "closing" and self.calendar.opening_hours == {}:
            at = 0  # never open, so never a closing: each local midnight (as "closing" without opening hours)
        day = first
        while day <= last:
            if at == "closing":
                session = self.calendar.session(day)
                if session is not None:
                    out.add(session[1])
            elif at is not None:
                out.add(first_instant_at(dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=at),
                                         self.calendar.tz))
            day += dt.timedelta(days=1)
        return sorted(out)

    def last_reset_ms(self, ts_ms: int) -> int | None:
        """The latest reset at or before ``ts_ms``; ``None`` only when ``at`` is ``None`` (never)."""
        if self.at is None:
            return None
        known = self._known
        if not (known and known[0] <= ts_ms < known[-1]):
            day = self.calendar.local_date(ts_ms)
            # a week and a day either side: the closing of the last open day, however many closed days follow
            known = self._known = self._resets(day - dt.timedelta(days=8), day + dt.timedelta(days=8))
        i = bisect.bisect_right(known, ts_ms)
        return known[i - 1] if i else None

    def stale(self, since_ms: int | None, ts_ms: int) -> bool:
        """Whether counts that run from reset ``since_ms`` are void at ``ts_ms`` (a later reset is at or before
        it); ``since_ms`` ``None`` (not known: counts kept from before this setting) never is."""
        if since_ms is None:
            return False
        last = self.last_reset_ms(ts_ms)
        return last is not None and since_ms < last

    def void_at(self, ts_ms: int, now_ms: int) -> bool:
        """Whether counts as of ``ts_ms`` (a stored or live occupancy row's time) are void at ``now_ms``: a reset
        came after ``ts_ms`` and at or before ``now_ms`` (the API shows such a row as 0, as the stage restarts
        its camera at the camera's next frame)."""
        last = self.last_reset_ms(now_ms)
        return last is not None and last > ts_ms


class Occupancy:
    """ins minus outs over a camera's lines, never below zero, since the last occupancy reset.

    Example:
        >>> o = Occupancy()
        >>> [o.apply(d) for d in ("out", "in", "in")]
        [0, 1, 2]
        >>> o.value, o.total_in, o.total_out
        (2, 2, 1)
        >>> reset = OccupancyReset(StoreCalendar("UTC"), 4 * 60)  # 04:00 UTC
        >>> o.follow(reset, 3 * 3_600_000), o.value, o.follow(reset, 5 * 3_600_000), o.value, o.total_in
        (False, 2, True, 0, 0)
    """

    def __init__(self) -> None:
        self.value = 0
        self.total_in = 0
        self.total_out = 0
        #: The reset these counts run from (:meth:`OccupancyReset.last_reset_ms` when they began); ``None``: not
        #: known yet (taken at the next frame, the counts kept: a state saved before resets).
        self.since_ms: int | None = None

    def follow(self, reset: OccupancyReset, ts_ms: int) -> bool:
        """At a frame of time ``ts_ms``: restart from 0 if a reset came since these counts began; whether it did."""
        stale = reset.stale(self.since_ms, ts_ms)
        if stale:
            self.value = self.total_in = self.total_out = 0
        if stale or self.since_ms is None:
            self.since_ms = reset.last_reset_ms(ts_ms)
        return stale

    def apply(self, direction: Dir) -> int:
        if direction == "in":
            self.total_in += 1
            self.value += 1
        else:
            self.total_out += 1
            self.value = max(0, self.value - 1)
        return self.value


#: ``camera_id`` of the store's own occupancy row (:func:`store_totals` as an ``OccupancyUpdate``: published on
#: ``occupancy``, stored in the history's ``occupancy`` table and the live state's ``P:camera:@store`` beside the
#: cameras' rows). ``@`` is no character of a camera id (``^[A-Za-z0-9._-]+$``), so no camera can have it.
STORE_OCCUPANCY_ID = "@store"


class StoreTotals(NamedTuple):
    """The store's occupancy and the ins and outs it comes from."""

    occupancy: int
    total_in: int
    total_out: int


_STEP = {"in": 1, "out": -1}


def _entrance_sums(entrance_lines: Sequence[tuple[str, str]],
                   line_counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> tuple[int, int, int]:
    counts = [line_counts.get(cam, {}).get(line, {}) for cam, line in entrance_lines]
    return (sum(c.get("in", 0) for c in counts), sum(c.get("out", 0) for c in counts),
            sum(c.get("clamped", 0) for c in counts))


def store_totals(entrance_lines: Sequence[tuple[str, str]] | None, cameras: Iterable[tuple[int, int, int]],
                 line_counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> StoreTotals:
    """The store's occupancy: the one rule of the ``store_occupancy`` alert, ``/v1/occupancy`` and ``/v1/live``.

    With ``entrance_lines`` (``(camera, line)`` pairs of ``store.entrance_lines``): the ins and outs of those
    lines (``line_counts``: camera -> line -> ``{"in": N, "out": N}``, as :meth:`LineCounter.counts`, and
    ``"clamped"``: :func:`store_clamps`); the other lines (a department's) are crossed by people already in
    the store. The occupancy runs over their crossings, clamped at 0 at each one as :class:`Occupancy` is: an
    out when nobody is inside (staff leaving after the reset) changes nothing, so the next ins count in full.
    It is kept as ins minus outs plus, per line, the outs so absorbed (``"clamped"``): it then lives where the
    counts live (each entrance camera's state), with them, and never below 0. The analytics stage passes every
    line of every camera when ``store.entrance_lines`` is not set (:func:`~storelens.stages.analytics.store_lines`).
    Without (``None``): the sums of the cameras' ``(occupancy, total_in, total_out)`` (the API's answer for data
    written before the stage kept the store's row).

    Example:
        >>> cams = [(1, 2, 1), (2, 2, 0)]  # camera "c" (its door: 2 in, 1 out) and "d" (a department line)
        >>> store_totals(None, cams, {})
        StoreTotals(occupancy=3, total_in=4, total_out=1)
        >>> store_totals([("c", "door")], cams, {"c": {"door": {"in": 2, "out": 1}}})
        StoreTotals(occupancy=1, total_in=2, total_out=1)
        >>> store_totals([("c", "door")], cams, {"c": {"door": {"in": 5, "out": 8, "clamped": 8}}})  # 8 out first
        StoreTotals(occupancy=5, total_in=5, total_out=8)
    """
    if entrance_lines is None:
        occ = total_in = total_out = 0
        for o, i, out in cameras:
            occ, total_in, total_out = occ + o, total_in + i, total_out + out
        return StoreTotals(occ, total_in, total_out)
    total_in, total_out, clamped = _entrance_sums(entrance_lines, line_counts)
    return StoreTotals(max(0, total_in - total_out + clamped), total_in, total_out)


def store_clamps(entrance_lines: Sequence[tuple[str, str]],
                 line_counts: Mapping[str, Mapping[str, Mapping[str, int]]], directions: Sequence[Dir]) -> list[int]:
    """What each of a frame's entrance-line crossings adds to its line's ``"clamped"`` (:func:`store_totals`).

    ``directions``: the crossings, in time order, already in ``line_counts``' ins and outs. Each one moves the
    store's occupancy from its value before (at least 0) by one, to at least 0: an out at 0 adds 1 (a count
    of a state saved before the ledger, below 0, is brought back to 0 by the next crossing).

    Example (the store empty after the reset, then 2 out and 1 in through one door):
        >>> store_clamps([("c", "door")], {"c": {"door": {"in": 1, "out": 2}}}, ["out", "out", "in"])
        [1, 1, 0]
    """
    total_in, total_out, clamped = _entrance_sums(entrance_lines, line_counts)
    raw = total_in - total_out + clamped - sum(_STEP[d] for d in directions)
    adds = []
    for d in directions:
        after = max(0, max(0, raw) + _STEP[d])
        adds.append(after - raw - _STEP[d])
        raw = after
    return adds


def window_start_ms(ts_ms: int, window_s: int) -> int:
    """Start of the tumbling window of ``window_s`` seconds that holds ``ts_ms``."""
    w = window_s * 1000
    return (ts_ms // w) * w


def occupancy_from_events(directions_in_time_order: Iterable[Dir]) -> int:
    """Replay directions through :class:`Occupancy` (used by storage and tests)."""
    occ = Occupancy()
    for d in directions_in_time_order:
        occ.apply(d)
    return occ.value
