"""Heatmaps: person-time per grid cell of a camera, per minute; floor homographies in metres.

Pure rules (numpy only, no I/O); drawing is :mod:`storelens.domain.heatmap_draw`.

Rules (each is a case in ``tests/test_heatmap.py`` or ``tests/test_heatmap_review_fixes.py``):

* **Anchor.** A person is at the bottom-centre of their box (the feet), in source
  pixels; the cell is ``(x // cell_px, y // cell_px)``, clipped to the frame's grid
  (``ceil(width / cell_px)`` columns, ``ceil(height / cell_px)`` rows).
* **Occupancy.** Each frame counts for the time to the *next* frame of the camera,
  at most :attr:`HeatmapAccumulator.gap_cap_ms` (a gap in the video is not presence):
  ``max_gap_ms``, or twice the camera's frame interval (``1000 / target_fps``) when
  that is longer, so a camera sampled at 0.5 fps is not cut to half its time; every
  person of the frame adds that many milliseconds to their cell. The last frame of a
  source counts for the interval before it (capped the same way). So a person standing
  in one cell for 10 s of video gives 10 000 ms there, whatever the frame rate.
* **Minutes.** The time a frame counts for, ``[ts, ts + w)``, is split at minute
  boundaries (epoch-aligned): 59.5 s -> 60.5 s is 500 ms in each minute. A minute is
  closed (final) once a frame at or after its end arrived, and at the end of a source.
* **Dwell.** The part of the occupancy spent *lingering*: the track's anchor moved
  less than ``dwell_speed_h_per_s`` of its own box height per second, measured
  against the track's anchor ``speed_window_ms`` ago (or the oldest one kept, if at
  least half that long ago). Box heights make the threshold independent of the
  distance to the camera. A track younger than half the window is not lingering yet.
* **Frame size.** A frame of another size than the last one (a stream switching resolution)
  closes every open minute first (the last frame counts up to the new one), at the old size:
  a minute holds cells of one grid only. The minute of the change may then come again at the
  new size (the history store keeps the later one; it reads a range at its latest frame size).
* **Grid of a saved state.** :meth:`HeatmapAccumulator.state` records ``cell_px``; a state
  saved under another cell size (the setting changed across a restart) loads without
  its open minutes and last frame, whose cells are of the other grid (a state without
  ``cell_px``, saved before it was recorded, is taken as of the current size).

Floor: :func:`fit_homography` maps image points to floor metres from >= 4 point pairs
(DLT, least squares); :func:`walking_stats` gives distances and speeds of track paths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from storelens.config.behaviour import floor_homography

MINUTE_MS = 60_000


def minute_start(ts_ms: int) -> int:
    """The epoch-aligned minute that holds ``ts_ms``.

    >>> minute_start(125_000)
    120000
    """
    return int(ts_ms) // MINUTE_MS * MINUTE_MS


def grid_shape(width: int, height: int, cell_px: int) -> tuple[int, int]:
    """``(rows, cols)`` of the grid that covers a ``width`` x ``height`` frame.

    >>> grid_shape(640, 480, 16)
    (30, 40)
    """
    return max(1, math.ceil(height / cell_px)), max(1, math.ceil(width / cell_px))


def anchor_cells(boxes_xyxy: np.ndarray, width: int, height: int, cell_px: int) -> np.ndarray:
    """``(N, 2)`` int cells ``(gx, gy)`` of the bottom-centre anchors of ``(N, 4)`` boxes."""
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    rows, cols = grid_shape(width, height, cell_px)
    gx = np.clip(np.floor((boxes[:, 0] + boxes[:, 2]) / 2 / cell_px), 0, cols - 1)
    gy = np.clip(np.floor(boxes[:, 3] / cell_px), 0, rows - 1)
    return np.stack([gx, gy], axis=1).astype(np.int64)


def split_minutes(ts_ms: int, dur_ms: int) -> list[tuple[int, int]]:
    """``[ts, ts + dur)`` as ``(minute start, ms in it)`` parts.

    >>> split_minutes(59_500, 1_000)
    [(0, 500), (60000, 500)]
    """
    out = []
    t, left = int(ts_ms), int(dur_ms)
    while left > 0:
        start = minute_start(t)
        part = min(t + left, start + MINUTE_MS) - t
        out.append((start, part))
        t += part
        left -= part
    return out


@dataclass
class HeatmapMinute:
    """One closed (or flushed) minute: ``cells[(gx, gy)] = [occupancy_ms, dwell_ms]``."""

    start_ms: int
    width: int
    height: int
    cells: dict[tuple[int, int], list[int]]

    def total_ms(self, kind: str = "occupancy") -> int:
        i = 0 if kind == "occupancy" else 1
        return sum(v[i] for v in self.cells.values())


@dataclass
class HeatmapAccumulator:
    """Per-camera accumulation of the current minutes (see the module docstring)."""

    cell_px: int = 16
    max_gap_ms: int = 1_000
    #: The camera's frame interval when it is sampled (``1000 / target_fps``; 0: every frame of the source):
    #: a frame counts for up to twice it, when that is longer than ``max_gap_ms`` (see :attr:`gap_cap_ms`).
    frame_interval_ms: float = 0.0
    dwell_speed_h_per_s: float = 0.25
    speed_window_ms: int = 1_000
    width: int = 0
    height: int = 0
    #: The last frame, not yet counted: ``(ts_ms, [[gx, gy, lingering], ...])``.
    pending: tuple[int, list[list[int]]] | None = None
    #: The interval before the last frame (what the last frame of a source counts for).
    last_dt_ms: int = 0
    #: minute start -> (gx, gy) -> [occupancy_ms, dwell_ms]
    minutes: dict[int, dict[tuple[int, int], list[int]]] = field(default_factory=dict)
    #: track id -> recent anchors ``[ts_ms, x, y]`` (oldest first).
    history: dict[int, list[list[float]]] = field(default_factory=dict)

    @property
    def gap_cap_ms(self) -> int:
        """The most a frame counts for: ``max_gap_ms``, or twice the frame interval when longer.

        >>> HeatmapAccumulator(max_gap_ms=1_000, frame_interval_ms=2_000).gap_cap_ms
        4000
        """
        return max(self.max_gap_ms, round(2 * self.frame_interval_ms))

    def update(self, ts_ms: int, width: int, height: int, track_ids: Sequence[int],
               boxes_xyxy: np.ndarray) -> list[HeatmapMinute]:
        """One frame in (every frame, with or without people); the minutes it closed out."""
        ts_ms = int(ts_ms)
        resized: list[HeatmapMinute] = []
        if int(width) and int(height) and self.width and self.height and \
                (int(width), int(height)) != (self.width, self.height):
            # another frame size: the open minutes and the last frame are cells of the old grid, closed now
            if self.pending is not None and ts_ms > self.pending[0]:
                self._credit(min(ts_ms - self.pending[0], self.gap_cap_ms))
            self.pending = None
            self.history.clear()
            resized = self._close(before_ms=None)
        if self.pending is not None and ts_ms > self.pending[0]:
            dt = ts_ms - self.pending[0]
            self._credit(min(dt, self.gap_cap_ms))
            self.last_dt_ms = dt
        elif self.pending is not None:  # same or older time (a replayed frame): counts for nothing
            pass
        self.width, self.height = int(width) or self.width, int(height) or self.height
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        cells = anchor_cells(boxes, self.width, self.height, self.cell_px) if len(boxes) else np.zeros((0, 2), int)
        linger = self._lingering(ts_ms, track_ids, boxes)
        self.pending = (ts_ms, [[int(c[0]), int(c[1]), int(d)] for c, d in zip(cells, linger)])
        return resized + self._close(before_ms=minute_start(ts_ms))

    def end(self) -> list[HeatmapMinute]:
        """End of the source: the last frame counts for the interval before it; every minute closes."""
        if self.pending is not None:
            self._credit(min(self.last_dt_ms, self.gap_cap_ms))
            self.pending = None
        self.history.clear()
        return self._close(before_ms=None)

    def _credit(self, dur_ms: int) -> None:
        assert self.pending is not None
        ts, cells = self.pending
        if not cells or dur_ms <= 0:
            return
        for start, part in split_minutes(ts, dur_ms):
            minute = self.minutes.setdefault(start, {})
            for gx, gy, linger in cells:
                v = minute.setdefault((gx, gy), [0, 0])
                v[0] += part
                if linger:
                    v[1] += part

    def _close(self, before_ms: int | None) -> list[HeatmapMinute]:
        out = []
        for start in sorted(self.minutes):
            if before_ms is not None and start + MINUTE_MS > before_ms:
                break
            cells = self.minutes.pop(start)
            if cells:
                out.append(HeatmapMinute(start, self.width, self.height, cells))
        return out

    def _lingering(self, ts_ms: int, track_ids: Sequence[int], boxes: np.ndarray) -> list[bool]:
        win = self.speed_window_ms
        out = []
        seen = set()
        for tid, (x1, y1, x2, y2) in zip(track_ids, boxes):
            tid = int(tid)
            seen.add(tid)
            x, y, h = (x1 + x2) / 2, y2, max(y2 - y1, 1.0)
            hist = self.history.setdefault(tid, [])
            ref = None
            for p in hist:  # the newest anchor at least a window old, else the oldest
                if ts_ms - p[0] >= win:
                    ref = p
            if ref is None and hist and ts_ms - hist[0][0] >= win / 2:
                ref = hist[0]
            linger = False
            if ref is not None:
                dt_s = (ts_ms - ref[0]) / 1000
                linger = math.hypot(x - ref[1], y - ref[2]) / h / dt_s < self.dwell_speed_h_per_s
            out.append(linger)
            hist.append([ts_ms, float(x), float(y)])
            # keep one anchor older than the window (the reference), drop the rest of the old ones
            while len(hist) > 1 and ts_ms - hist[1][0] >= win:
                hist.pop(0)
        for tid in [t for t, h in self.history.items() if t not in seen and ts_ms - h[-1][0] > 2 * win]:
            del self.history[tid]
        return out

    # -- state -------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "cell_px": self.cell_px, "width": self.width, "height": self.height, "last_dt_ms": self.last_dt_ms,
            "pending": None if self.pending is None else [self.pending[0], self.pending[1]],
            "minutes": {str(s): [[gx, gy, v[0], v[1]] for (gx, gy), v in cells.items()]
                        for s, cells in self.minutes.items()},
            "history": {str(t): [list(pt) for pt in h] for t, h in self.history.items()},  # a copy: update grows h
        }

    def load_state(self, state: dict) -> bool:
        """Go on from :meth:`state`; ``False`` when it was saved under another ``cell_px``: its open minutes and
        last frame (cells of the other grid) are then dropped, the rest (frame size, track anchors) kept."""
        # no cell_px: saved before it was recorded, most likely by the same settings (an upgrade): taken as current
        same_grid = int(state.get("cell_px", self.cell_px)) == self.cell_px
        self.width, self.height = int(state.get("width", 0)), int(state.get("height", 0))
        self.last_dt_ms = int(state.get("last_dt_ms", 0))
        p = state.get("pending") if same_grid else None
        self.pending = None if p is None else (int(p[0]), [[int(a), int(b), int(c)] for a, b, c in p[1]])
        self.minutes = {int(s): {(int(gx), int(gy)): [int(o), int(d)] for gx, gy, o, d in cells}
                        for s, cells in (state.get("minutes", {}) if same_grid else {}).items()}
        self.history = {int(t): [[float(v) for v in pt] for pt in h] for t, h in state.get("history", {}).items()}
        return same_grid


def cells_to_grid(cells: Iterable[tuple[int, int, float]], width: int, height: int, cell_px: int) -> np.ndarray:
    """``(rows, cols)`` float grid of ``(gx, gy, value)`` cells (cells outside the frame are dropped)."""
    rows, cols = grid_shape(width, height, cell_px)
    grid = np.zeros((rows, cols), np.float64)
    for gx, gy, v in cells:
        if 0 <= gx < cols and 0 <= gy < rows:
            grid[gy, gx] += v
    return grid


# -- floor -------------------------------------------------------------------------------


def fit_homography(pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> np.ndarray:
    """3x3 homography image pixel -> floor metres from >= 4 ``((u, v), (x_m, y_m))`` pairs (normalised DLT).

    >>> H = fit_homography([((0, 0), (0, 0)), ((100, 0), (1, 0)), ((100, 100), (1, 1)), ((0, 100), (0, 1))])
    >>> to_floor(H, [[50, 50]]).round(6).tolist()
    [[0.5, 0.5]]
    """
    return floor_homography(pairs)


def to_floor(H: np.ndarray, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``(N, 2)`` image points -> ``(N, 2)`` floor points (metres) through ``H``."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    q = np.c_[p, np.ones(len(p))] @ np.asarray(H, np.float64).T
    return q[:, :2] / q[:, 2:3]


@dataclass(frozen=True)
class WalkingStats:
    tracks: int
    distance_m: float
    duration_s: float

    @property
    def mean_speed_m_s(self) -> float | None:
        return self.distance_m / self.duration_s if self.duration_s > 0 else None


def path_distance_m(ts_ms: Sequence[int], points_m: np.ndarray, step_ms: int = 500) -> tuple[float, float]:
    """Walked distance (m) and duration (s) of one path of floor points, sampled every ``step_ms``
    (per-frame jitter of the boxes would add up to metres of false walking otherwise)."""
    pts = np.asarray(points_m, np.float64).reshape(-1, 2)
    if len(pts) < 2:
        return 0.0, 0.0
    keep = [0]
    for i in range(1, len(pts)):
        if ts_ms[i] - ts_ms[keep[-1]] >= step_ms:
            keep.append(i)
    if keep[-1] != len(pts) - 1 and ts_ms[-1] > ts_ms[keep[-1]]:
        keep.append(len(pts) - 1)
    sub = pts[keep]
    dist = float(np.sqrt((np.diff(sub, axis=0) ** 2).sum(axis=1)).sum())
    return dist, (ts_ms[keep[-1]] - ts_ms[0]) / 1000


def walking_stats(H: np.ndarray, paths: Iterable[tuple[Sequence[int], np.ndarray]],
                  min_duration_s: float = 1.0, step_ms: int = 500) -> WalkingStats:
    """Distance and time walked by tracks on the floor: ``paths`` of ``(ts_ms, (N, 4) boxes)``.

    Bottom-centre anchors are mapped through ``H``; tracks seen for less than ``min_duration_s`` are left out.
    """
    n, dist, dur = 0, 0.0, 0.0
    for ts, boxes in paths:
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        d, t = path_distance_m(list(ts), to_floor(H, np.c_[(b[:, 0] + b[:, 2]) / 2, b[:, 3]]), step_ms)
        if t < min_duration_s:
            continue
        n, dist, dur = n + 1, dist + d, dur + t
    return WalkingStats(n, dist, dur)


def plan_grid(cameras: Iterable[tuple[np.ndarray, int, Iterable[tuple[int, int, float]]]], px_per_m: float,
              origin_px: tuple[float, float], plan_size: tuple[int, int], plan_cell_px: int) -> np.ndarray:
    """Cameras' cells merged on the store plan: ``(rows, cols)`` grid of plan cells of ``plan_cell_px``.

    ``cameras``: ``(H image->metres, cell_px, (gx, gy, value) cells)``; each cell's centre
    is mapped to the plan (``origin_px + metres * px_per_m``) and its value added to the
    plan cell there (cameras that overlap add up). Cells off the plan are dropped.
    """
    w, h = plan_size
    rows, cols = grid_shape(w, h, plan_cell_px)
    grid = np.zeros((rows, cols), np.float64)
    for H, cell_px, cells in cameras:
        arr = np.array([[gx, gy, v] for gx, gy, v in cells], np.float64).reshape(-1, 3)
        if not len(arr):
            continue
        centres = (arr[:, :2] + 0.5) * cell_px
        px = to_floor(H, centres) * px_per_m + np.asarray(origin_px, np.float64)
        gx = np.floor(px[:, 0] / plan_cell_px).astype(np.int64)
        gy = np.floor(px[:, 1] / plan_cell_px).astype(np.int64)
        ok = (gx >= 0) & (gx < cols) & (gy >= 0) & (gy < rows) & np.isfinite(px).all(axis=1)
        np.add.at(grid, (gy[ok], gx[ok]), arr[ok, 2])
    return grid
