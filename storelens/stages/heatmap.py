"""Heatmap analysis of one camera inside the analytics stage: person-time per grid cell, per minute.

The rules are :class:`storelens.domain.heatmap.HeatmapAccumulator` (occupancy = every
person of a frame counts for the time to the next frame, capped at ``heatmap.max_gap_ms`` or
twice the camera's frame interval ``1000 / target_fps`` when longer; dwell = the part of it
spent lingering, see that module). A minute is published once, final, as a
:class:`~storelens.contract.messages.HeatmapWindow` on ``heatmaps`` when a frame at or after
its end arrives, and at the end of a finite source; the history store keeps one row per
minute (:mod:`storelens.storage.heatmaps`).

For fast ranges the analyzer also keeps the running sum of the current (epoch-aligned)
hour and publishes it as an hour-long ``HeatmapWindow`` after the minutes it closes, once for
each hour they belong to (the store upserts it: the last one of an hour is that hour's total,
the sum of its minute rows, also when a stalled stream closes the minutes of two hours at once).

The hour row the store keeps is rebuilt from its stored minute rows when they are written (of the
hour's latest frame size, :func:`storelens.storage.heatmaps.rebuild_hours`), so a restart (the sum
starts afresh) or a re-pointed file (its minutes replace the old file's) cannot make it differ from
them. A change of the frame size restarts the hour sum and is logged on a camera with zones (they
are in pixels of the frame).

A state saved under another ``heatmap.cell_px`` (changed across a restart) is loaded without its
open minutes and hour sum (their cells are of the other grid; the rows already written keep their
own ``cell_px``), with a warning; the new grid's hour row starts from the next minute.
"""
from __future__ import annotations

import logging

from storelens.config import CameraConfig, SiteConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.heatmap import MINUTE_MS, HeatmapAccumulator, HeatmapMinute

from storelens.stages.analyzers import CameraAnalyzer, FrameView

HOUR_MS = 3_600_000
log = logging.getLogger(__name__)


def heatmap_window_message(camera_id: str, cell_px: int, minute: HeatmapMinute,
                           span_ms: int = MINUTE_MS) -> m.HeatmapWindow:
    return m.HeatmapWindow(
        camera_id=camera_id, window_start_ms=minute.start_ms, window_end_ms=minute.start_ms + span_ms,
        cell_px=cell_px, width=minute.width, height=minute.height,
        cells=[m.HeatmapCell(gx=gx, gy=gy, occupancy_ms=v[0], dwell_ms=v[1])
               for (gx, gy), v in sorted(minute.cells.items(), key=lambda kv: (kv[0][1], kv[0][0]))])


class HeatmapAnalyzer(CameraAnalyzer):
    """The heatmap of one camera (see the module docstring)."""

    name = "heatmap"
    topics = {m.HeatmapWindow: topics.HEATMAPS}

    def __init__(self, config: SiteConfig, camera: CameraConfig) -> None:
        cfg = config.heatmap
        self.camera_id = camera.id
        self.has_zones = bool(camera.zones)
        self.acc = HeatmapAccumulator(cell_px=cfg.cell_px, max_gap_ms=cfg.max_gap_ms,
                                      dwell_speed_h_per_s=cfg.dwell_speed_h_per_s,
                                      speed_window_ms=cfg.speed_window_ms,
                                      frame_interval_ms=1000 / camera.target_fps if camera.target_fps else 0.0)
        #: The running sum of the current hour (published after each closed minute).
        self.hour: HeatmapMinute | None = None

    def update(self, view: FrameView) -> list:
        old = (self.acc.width, self.acc.height)
        if self.has_zones and all(old) and view.width and view.height and (view.width, view.height) != old:
            log.warning("camera %s: the frame size changed from %sx%s to %sx%s; its zones (and lines) are in "
                        "pixels of the frame: check that they still fit", self.camera_id, *old, view.width,
                        view.height)
        return self._messages(self.acc.update(view.ts_ms, view.width, view.height, view.track_ids, view.boxes_xyxy))

    def end(self, seq: int, ts_ms: int, prior: list) -> list:
        return self._messages(self.acc.end())

    def _messages(self, minutes: list[HeatmapMinute]) -> list:
        out: list = []
        for i, mn in enumerate(minutes):
            out.append(heatmap_window_message(self.camera_id, self.acc.cell_px, mn))
            start = mn.start_ms // HOUR_MS * HOUR_MS
            if self.hour is None or self.hour.start_ms != start:
                if i and self.hour is not None:  # an hour these minutes closed: its final sum before the next one
                    out.append(heatmap_window_message(self.camera_id, self.acc.cell_px, self.hour, HOUR_MS))
                self.hour = HeatmapMinute(start, mn.width, mn.height, {})
            elif (self.hour.width, self.hour.height) != (mn.width, mn.height):
                self.hour = HeatmapMinute(start, mn.width, mn.height, {})  # another frame size: the sum restarts
            for key, (occ, dwell) in mn.cells.items():
                v = self.hour.cells.setdefault(key, [0, 0])
                v[0] += occ
                v[1] += dwell
        if minutes and self.hour is not None:
            out.append(heatmap_window_message(self.camera_id, self.acc.cell_px, self.hour, HOUR_MS))
        return out

    def state(self) -> dict:
        hour = None if self.hour is None else [self.hour.start_ms, self.hour.width, self.hour.height,
                                                [[gx, gy, v[0], v[1]] for (gx, gy), v in self.hour.cells.items()]]
        return {**self.acc.state(), "hour": hour}

    def load_state(self, state: dict) -> None:
        if not self.acc.load_state(state):
            log.warning("heatmap of camera %s: the saved state is of heatmap.cell_px %s, now %s: its open minutes "
                        "and hour sum are dropped", self.camera_id, state.get("cell_px"), self.acc.cell_px)
            self.hour = None
            return
        h = state.get("hour")
        self.hour = None if h is None else HeatmapMinute(int(h[0]), int(h[1]), int(h[2]), {
            (int(gx), int(gy)): [int(o), int(d)] for gx, gy, o, d in h[3]})


def heatmap_analyzer(config: SiteConfig, camera: CameraConfig) -> HeatmapAnalyzer | None:
    """The camera's heatmap analyzer (``None`` when ``heatmap.enabled`` is false)."""
    return HeatmapAnalyzer(config, camera) if config.heatmap.enabled else None
