"""Stationary objects: tracks that have not moved since they appeared (mannequins, standees, posters).

A person detector also finds things that only look like people; a shop
window mannequin is detected in every frame and never moves. One
:class:`StationaryFilter` per camera flags such tracks so that analytics can
skip them (lines, zones, occupancy, heatmaps). Pure logic, no I/O; the
detect-track stage calls :meth:`StationaryFilter.update` once per frame.

Rules (``stationary:`` in the site file, :class:`~storelens.config.behaviour.StationaryConfig`):

* **Stayed put since it appeared.** A track is stationary once ``after_s``
  have passed since its first frame and its box has stayed where it first
  was: centre within ``radius`` box heights of the first box's centre,
  height within ``size_tolerance`` of the first height.
* **A move is final.** Outside those bounds for ``move_frames`` frames in a
  row, the track has moved, and is never stationary again (a mannequin's
  track taken over by a passer-by is released as soon as it follows them).
* **New ids for the same object.** Trackers lose and re-create ids. A new id
  whose box matches (IoU >= ``match_iou``) the last box of a track lost
  within ``memory_s`` continues that track's state: a mannequin's age keeps
  counting, and a shopper who had walked in stays "moved".
* **Place memory.** Where a track has been stationary is remembered (for
  ``place_forget_s`` after it was last seen there): a new id appearing at
  that place is stationary at once. A place is forgotten when its object walks
  away and nothing unmoved is seen there again within ``memory_s``.

Trade-off: the filter cannot tell a mannequin from a person who stands still
*from the moment their track appears* (for example from the first frame of a
video, or a restart without the saved state) for ``after_s``: such a person is
flagged until they move (``radius`` box heights), then counted normally. A
shopper who stands at a shelf for a minute is not affected: they walked in
first, so their track has moved, and id switches while they stand still hand
the "moved" state on to the new id. A longer ``after_s`` makes that case rarer
but flags mannequins later after a cold start; the saved state (places)
makes later starts immediate.

Example (after_s = 2 s, 1 frame per second): track 1 stands still, track 2 walks.
    >>> from storelens.config.behaviour import StationaryConfig
    >>> sf = StationaryFilter(StationaryConfig(after_s=2))
    >>> for t in range(4):
    ...     flags = sf.update(t * 1000, [1, 2], [[10, 10, 30, 70], [100 + 30 * t, 10, 120 + 30 * t, 70]])
    ...     print(t, flags.tolist())
    0 [False, False]
    1 [False, False]
    2 [True, False]
    3 [True, False]
    >>> sf.update(4000, [9], [[11, 10, 31, 70]]).tolist()  # a new id at the remembered place
    [True]
"""
from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Sequence

import numpy as np

from storelens.config.behaviour import StationaryConfig

Box = tuple[float, float, float, float]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))
    0.3333333333333333
    """
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Track:
    """One track's state (serialised as ``astuple``, in field order)."""

    first_ts: int  # when the object was first seen (inherited across id switches)
    ref: Box  # the box it has to stay at
    last_ts: int
    last_box: Box
    moved: bool = False
    out_frames: int = 0  # consecutive frames outside the bounds
    stationary: bool = False
    from_place: bool = False  # started at a remembered place: stationary without waiting


@dataclass
class _Place:
    box: Box
    last_ts: int
    vacated_ts: int | None = None  # its object walked away at this time (forgotten after memory_s)


class StationaryFilter:
    """Flags the stationary tracks of one camera (see the module docstring)."""

    def __init__(self, cfg: StationaryConfig | None = None) -> None:
        self.cfg = cfg or StationaryConfig()
        self._tracks: dict[int, _Track] = {}
        self._places: list[_Place] = []

    # -- per frame ---------------------------------------------------------------------------

    def update(self, ts_ms: int, track_ids: Sequence[int], boxes_xyxy: np.ndarray | Sequence) -> np.ndarray:
        """Tracks of one frame (ids, boxes in any fixed pixel scale) -> ``stationary`` per track (bool array).

        Disabled (``enabled: false``): all ``False``.
        """
        ids = [int(t) for t in track_ids]
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        if len(ids) != len(boxes):
            raise ValueError(f"{len(ids)} track ids but {len(boxes)} boxes")
        out = np.zeros(len(ids), bool)
        if not self.cfg.enabled:
            return out
        ts = int(ts_ms)
        present = set(ids)
        for k, (tid, b) in enumerate(zip(ids, boxes)):
            box: Box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            st = self._tracks.get(tid)
            if st is None:
                st = self._tracks[tid] = self._start(ts, box, present)
            else:
                self._observe(st, box)
            st.last_ts, st.last_box = ts, box
            was = st.stationary
            # Not yet stationary and outside its bounds right now (a move pending): wait.
            st.stationary = not st.moved and (was or st.out_frames == 0) and \
                (st.from_place or ts - st.first_ts >= self.cfg.after_s * 1000)
            if st.stationary:
                self._remember(st.ref, ts)
            elif was and st.moved:
                self._vacate(st.ref, ts)
            out[k] = st.stationary
        self._expire(ts)
        return out

    def _start(self, ts: int, box: Box, present: set[int]) -> _Track:
        """A new id: at a remembered place, or continuing a lost track at the same place, or afresh."""
        place = self._match_place(box)
        if place is not None:
            place.vacated_ts = None
            st = _Track(ts, place.box, ts, box, from_place=True)
            self._observe(st, box)
            return st
        best, best_iou = None, self.cfg.match_iou
        for tid, st in self._tracks.items():
            if tid in present or ts - st.last_ts > self.cfg.memory_s * 1000:
                continue
            iou = box_iou(box, st.last_box)
            if iou >= best_iou:
                best, best_iou = st, iou
        if best is not None:
            st = _Track(best.first_ts, best.ref, ts, box, best.moved, 0, best.stationary, best.from_place)
            self._observe(st, box)
            return st
        return _Track(ts, box, ts, box)

    def _observe(self, st: _Track, box: Box) -> None:
        """Move test of one new box against the track's reference box."""
        if st.moved:
            return
        r = st.ref
        rh = max(r[3] - r[1], 1e-6)
        dx = (box[0] + box[2] - r[0] - r[2]) / 2
        dy = (box[1] + box[3] - r[1] - r[3]) / 2
        off = (dx * dx + dy * dy) ** 0.5 > self.cfg.radius * rh or \
            abs((box[3] - box[1]) / rh - 1.0) > self.cfg.size_tolerance
        st.out_frames = st.out_frames + 1 if off else 0
        if st.out_frames >= self.cfg.move_frames:
            st.moved = True

    # -- places ------------------------------------------------------------------------------

    def _match_place(self, box: Box) -> _Place | None:
        if not self.cfg.place_forget_s:
            return None
        best, best_iou = None, self.cfg.match_iou
        for p in self._places:
            iou = box_iou(box, p.box)
            if iou >= best_iou:
                best, best_iou = p, iou
        return best

    def _remember(self, box: Box, ts: int) -> None:
        if not self.cfg.place_forget_s:
            return
        p = self._match_place(box)
        if p is None:
            self._places.append(_Place(box, ts))
        else:
            p.last_ts, p.vacated_ts = ts, None

    def _vacate(self, box: Box, ts: int) -> None:
        p = self._match_place(box)
        if p is not None and p.vacated_ts is None:
            p.vacated_ts = ts

    def _expire(self, ts: int) -> None:
        keep_ms = self.cfg.memory_s * 1000
        self._tracks = {t: s for t, s in self._tracks.items() if ts - s.last_ts <= keep_ms}
        forget_ms = self.cfg.place_forget_s * 1000
        self._places = [p for p in self._places if ts - p.last_ts <= forget_ms
                        and (p.vacated_ts is None or ts - p.vacated_ts <= keep_ms)]

    # -- inspection and state ----------------------------------------------------------------

    def places(self) -> list[Box]:
        """Boxes of the remembered stationary places."""
        return [p.box for p in self._places]

    def state(self) -> dict:
        """JSON-serialisable state; :meth:`load_state` of it continues exactly where this stands.

        >>> import json
        >>> a = StationaryFilter(StationaryConfig(after_s=1)); _ = a.update(0, [1], [[0, 0, 10, 30]])
        >>> b = StationaryFilter(StationaryConfig(after_s=1)); b.load_state(json.loads(json.dumps(a.state())))
        >>> b.update(1000, [1], [[0, 0, 10, 30]]).tolist()
        [True]
        """
        return {"tracks": {str(t): list(astuple(s)) for t, s in self._tracks.items()},
                "places": [[*p.box, p.last_ts, p.vacated_ts] for p in self._places]}

    def load_state(self, state: dict) -> None:
        def box(v: Sequence) -> Box:
            return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))

        self._tracks = {int(t): _Track(int(v[0]), box(v[1]), int(v[2]), box(v[3]), bool(v[4]), int(v[5]),
                                       bool(v[6]), bool(v[7]))
                        for t, v in state.get("tracks", {}).items()}
        self._places = [_Place(box(v[:4]), int(v[4]), None if v[5] is None else int(v[5]))
                        for v in state.get("places", [])]
