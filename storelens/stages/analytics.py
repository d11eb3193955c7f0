"""The analytics stage: tracked frames -> crossings, occupancy, count windows (and zones, heatmaps).

Pure: no I/O. Its per-camera state is JSON-serialisable (:meth:`AnalyticsStage.camera_state`)
so the faust host keeps it in a changelog-backed table and the embedded mode in memory.

After each frame the store-level alert step (:mod:`storelens.stages.store_alerts`:
``store_occupancy``, ``camera_down``) sees every camera's latest occupancy and frame time; its
state rides along in every camera's state (after a restart the newest copy wins).
:meth:`AnalyticsStage.tick` is called by the runner about once a second (both modes), so a
silent store still moves the clock of ``camera_down`` and gets the daily reset's 0 rows.

**The store's occupancy** (:func:`~storelens.domain.counting.store_totals` over :func:`store_lines`:
``store.entrance_lines`` when set, else every line of every camera; their ins minus outs clamped at 0 at each
crossing, once for the whole store, not per camera) is the ``store_occupancy`` alert's value. What the clamping
absorbed (outs while nobody is inside) is kept per entrance line in its camera's state beside the line's counts
(:attr:`AnalyticsStage.store_clamped`), so the number survives a restart of the analytics service with the counts
it comes from. Each frame that gives its camera's ``OccupancyUpdate`` (a frame with crossings) also gives one of
camera id :data:`~storelens.domain.counting.STORE_OCCUPANCY_ID` (``@store``, stamped with the store clock),
stored and published as the cameras' are: ``/v1/occupancy`` and ``/v1/live`` read that one row, so they show the
alert's number. The row counts the cameras whose state the stage has: an entrance camera that never sent a frame
counts 0 and does not hold it back. Like the store-wide alerts, the row needs every camera on one analytics
worker (the default single replica). The embedded mode keeps its state in memory only: at its start it takes the
day's counts of its live cameras, and the store's, from the history (:meth:`AnalyticsStage.resume_counts`).

**The daily reset** (``store.occupancy_reset``, :class:`~storelens.domain.counting.OccupancyReset`): a camera's
first frame at or after a reset (its own frame time) restarts its occupancy, ins and outs (and its lines' counts,
the entrance lines' ins, outs and clamped outs) from 0, before that frame's crossings, and gives its
``OccupancyUpdate`` (and the store's row) even without a crossing, so ``/v1/occupancy`` and ``/v1/live`` show the
new day's 0. The store's number leaves out, at the store clock, every camera not restarted yet
(:meth:`AnalyticsStage.store_totals`); the API, by the same rule (:func:`occupancy_reset`), shows a row older than
the latest reset (a camera without a frame since) as 0. A camera with no frame since writes that 0 row (and the
store's) on the tick once the reset has passed (:meth:`AnalyticsStage.reset_rows`), so the stored and live rows
say what the API shows. The crossings and count windows are history and stay as they are.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from storelens.backends.video import is_live
from storelens.config import SiteConfig, entrance_lines_of, with_site_update
from storelens.config.alerts import ALERT_KINDS, STORE_KINDS
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import (STORE_OCCUPANCY_ID, CrossingEvent, LineCounter, Occupancy, OccupancyReset,
                                       StoreTotals, store_clamps, store_totals, window_start_ms)
from storelens.domain.geometry import anchors_bottom_center, polygon_in_frame, segment_in_frame
from storelens.errors import DecodeError
from storelens.stages.alerts import closed_alerts, store_calendar
from storelens.stages.analyzers import CameraAnalyzer, FrameView, build_analyzers
from storelens.stages.base import Outputs, Publish, UnknownCamera, decode_input
from storelens.stages.store_alerts import StoreAlerts

log = logging.getLogger(__name__)
#: ``storelens_errors_total`` reason of a counting line that lies entirely outside its camera's frame
#: (:meth:`AnalyticsStage.check_lines`): it never counts anybody.
LINE_OUTSIDE_FRAME = "line_outside_frame"
#: ``storelens_errors_total`` reason of a zone that lies entirely outside its camera's frame
#: (:meth:`AnalyticsStage.check_zones`): nobody is ever in it.
ZONE_OUTSIDE_FRAME = "zone_outside_frame"


def store_lines(config: SiteConfig) -> list[tuple[str, str]]:
    """The ``(camera, line)`` pairs whose crossings are the store's occupancy: ``store.entrance_lines``
    (:func:`~storelens.config.entrance_lines_of`), else every line of every camera of ``config`` (as the KPIs'
    visitors: "default every line"). Every door then counts in one number clamped at 0 (people who come in by one
    door and leave by another are not left inside, as a sum of each camera's own clamped occupancy leaves them).

    >>> from storelens.config import parse_config
    >>> line = {"id": "in", "a": [0, 5], "b": [9, 5]}
    >>> store_lines(parse_config({"store": {"id": "s"}, "cameras": [
    ...     {"id": "a", "source": "a.mp4", "lines": [line]}, {"id": "b", "source": "b.mp4", "lines": [line]}]}))
    [('a', 'in'), ('b', 'in')]
    """
    entrance = entrance_lines_of(config)
    if entrance is None:
        return [(cam.id, line.id) for cam in config.cameras for line in cam.lines]
    return [tuple(x.split("/", 1)) for x in entrance]  # type: ignore[misc]


def occupancy_reset(config: SiteConfig) -> OccupancyReset:
    """The site's occupancy reset (``store.occupancy_reset`` in the store's calendar): the stage's, and the API's
    (:mod:`storelens.api.routes.occupancy` shows a row older than a reset as 0)."""
    return OccupancyReset(store_calendar(config), config.store.occupancy_reset_at())


@dataclass
class AnalyticsOutput:
    crossings: list[CrossingEvent] = field(default_factory=list)
    occupancy: m.OccupancyUpdate | None = None
    #: The store's occupancy (camera id ``STORE_OCCUPANCY_ID``) with ``occupancy``.
    store_occupancy: m.OccupancyUpdate | None = None
    windows: list[m.CountWindow] = field(default_factory=list)
    #: What the camera's analyzers returned (zone events, statistics, heatmaps, ...), in order.
    analyzed: list = field(default_factory=list)
    #: Alerts of the store-level step (store_occupancy, camera_down; see :mod:`storelens.stages.store_alerts`).
    store_alerts: list = field(default_factory=list)
    #: ``resolved`` alerts whose rule a site version removed or changed (:func:`~storelens.stages.alerts.closed_alerts`)
    #: found in the camera's state loaded from a snapshot (the analytics service's table).
    closed_alerts: list = field(default_factory=list)
    duplicate: bool = False
    #: Problems found with the frame, not errors of it: ``storelens_errors_total`` reason -> how many
    #: (:data:`LINE_OUTSIDE_FRAME`, :data:`ZONE_OUTSIDE_FRAME`); the runner counts them (``Outputs.info["errors"]``).
    errors: dict[str, int] = field(default_factory=dict)


def _alert_key(alert: m.Alert, store_id: str) -> str:
    """The key of a store-level alert's messages: its camera (``camera_down``) or the store; a resolution from a state
    saved before alerts kept their kind and camera takes it from its id (``rule:<camera or store>:...``), so every
    message of one alert is on one partition.

    >>> _alert_key(m.Alert(alert_id="down:d:start-5"), "shop"), _alert_key(m.Alert(alert_id="full:shop:9"), "shop")
    ('d', 'shop')
    """
    parts = alert.alert_id.split(":")
    return alert.camera_id or (parts[1] if len(parts) >= 3 and parts[1] else store_id)


class AnalyticsStage:
    """TrackedFrame -> crossings, occupancy and per-window counts, per camera.

    As a stage (:meth:`handle`) it also takes the faces services' outputs
    (``track-attributes``, ``customer-matches``) as records for the history store;
    they change no state here, so redeliveries are harmless (the store upserts).
    """

    name = "analytics"
    inputs = {topics.TRACKS: m.TrackedFrame, topics.TRACK_ATTRIBUTES: m.TrackAttributes,
              topics.CUSTOMER_MATCHES: m.CustomerMatch, topics.CAMERA_SNAPSHOTS: m.CameraSnapshot,
              topics.SITE_CONFIG: m.SiteUpdate, topics.STAFF_TRACKS: m.StaffTrack}
    outputs = (topics.CROSSINGS, topics.OCCUPANCY, topics.COUNTS, topics.ZONE_EVENTS, topics.ZONE_STATS,
               topics.ZONE_OCCUPANCY, topics.HEATMAPS, topics.TRACK_SUMMARIES, topics.ALERTS)
    on_error = "dead_letter"
    #: Seconds between two calls of :meth:`tick` by the runner (both modes).
    tick_s = 1.0

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.cameras = {c.id for c in config.cameras}
        self.counters = {c.id: LineCounter(c.id, c.lines, config.counting) for c in config.cameras}
        self.occupancy = {c.id: Occupancy() for c in config.cameras}
        #: When occupancy restarts from 0 (``store.occupancy_reset``).
        self.reset = occupancy_reset(config)
        #: camera -> entrance line -> outs the store's occupancy absorbed at 0 since the camera's reset (the
        #: ``"clamped"`` of :func:`~storelens.domain.counting.store_totals`), saved with the camera's counts.
        self.store_clamped: dict[str, dict[str, int]] = {c.id: {} for c in config.cameras}
        self._windows: dict[tuple[str, str, int], list[int]] = {}
        #: camera id -> analyzer name -> analyzer (zones, heatmaps, ...; see :mod:`storelens.stages.analyzers`).
        self.analyzers: dict[str, dict[str, CameraAnalyzer]] = {c.id: build_analyzers(config, c)
                                                                for c in config.cameras}
        #: Last processed seq per camera: redelivered or replayed frames are skipped.
        self.last_seq: dict[str, int] = {}
        #: camera id -> the time of its last frame processed (not the highest it reached: a re-pointed file's frames
        #: may go back in time): its end-of-stream marker is taken as dated then (:meth:`dated_end`).
        self.last_frame_ts: dict[str, int] = {}
        self.ended: set[str] = set()
        #: (camera, line) pairs whose ins minus outs are the store's occupancy (:func:`store_lines`): the site
        #: file's ``store.entrance_lines``, also after a site version removed one (it has no counts then), else
        #: every line of every camera in force.
        self.entrance_lines = store_lines(config)
        self._entrance = set(self.entrance_lines)
        #: Store-wide alert rules (every camera's latest occupancy and frame time).
        self.store_alerts = StoreAlerts(config, self.store_occupancy)
        #: Version of the site edited through the API in force (0: the site file's).
        self.site_version = 0
        #: Cameras removed by a site version: their tracked frames still in flight are skipped, not dead-lettered.
        self.removed_cameras: set[str] = set()
        #: Cameras no longer in the site whose open alerts this stage resolved: a site version removed them while it
        #: held their state (:meth:`apply_site`), or their saved state was closed (:meth:`close_removed_camera`).
        self.removed_closed: set[str] = set()
        #: camera id -> the reset whose 0 row :meth:`reset_rows` wrote (in memory: after a restart written again,
        #: the same row).
        self._zeroed: dict[str, int] = {}
        #: camera id -> the alert state of its loaded snapshot, whose alerts of rules no longer in force are
        #: resolved with its next frame (:meth:`load_camera_state`).
        self._closing: dict[str, dict] = {}
        #: The alerts the last site version resolved (:meth:`apply_site`), handed out by :meth:`handle`.
        self._site_closed: list[m.Alert] = []
        #: camera id -> the frame size and lines :meth:`check_lines` last checked (each warned of once).
        self._lines_checked: dict[str, tuple] = {}
        #: camera id -> the frame size and zones :meth:`check_zones` last checked (each warned of once).
        self._zones_checked: dict[str, tuple] = {}

    def check_lines(self, camera_id: str, width: int, height: int) -> list[str]:
        """The ids of the camera's lines that lie entirely outside its frame of ``width`` x ``height`` px (they
        never count anybody: a line drawn on another camera's picture, or a frame size that changed), each logged
        as a warning once per camera, frame size and lines; ``[]`` when checked already or the size is unknown."""
        counter = self.counters.get(camera_id)
        if counter is None or width <= 0 or height <= 0:
            return []
        key = (width, height, tuple((ln.id, ln.a, ln.b) for ln in counter.lines))
        if self._lines_checked.get(camera_id) == key:
            return []
        self._lines_checked[camera_id] = key
        outside = [ln for ln in counter.lines if not segment_in_frame(ln.a, ln.b, width, height)]
        for ln in outside:
            log.warning("camera %s: line %r (a %s, b %s) lies entirely outside its %sx%s frame: it never counts; "
                        "lines are in pixels of the camera's frame (GET /v1/cameras/%s/snapshot)", camera_id, ln.id,
                        list(ln.a), list(ln.b), width, height, camera_id,
                        extra={"camera": camera_id, "line": ln.id, "width": width, "height": height})
        return [ln.id for ln in outside]

    def check_zones(self, camera_id: str, width: int, height: int) -> list[str]:
        """The ids of the camera's zones that lie entirely outside its frame of ``width`` x ``height`` px (nobody is
        ever in them: a zone drawn on another camera's picture or at another resolution), each logged as a warning
        once per camera, frame size and zones (as :meth:`check_lines`); ``[]`` when checked already or the size is
        unknown."""
        cam = next((c for c in self.config.cameras if c.id == camera_id), None)
        if cam is None or not cam.zones or width <= 0 or height <= 0:
            return []
        key = (width, height, tuple((z.id, tuple(z.polygon)) for z in cam.zones))
        if self._zones_checked.get(camera_id) == key:
            return []
        self._zones_checked[camera_id] = key
        outside = [z for z in cam.zones if not polygon_in_frame(z.polygon, width, height)]
        for z in outside:
            log.warning("camera %s: zone %r lies entirely outside its %sx%s frame: nobody is ever in it; zones are "
                        "in pixels of the camera's frame (GET /v1/cameras/%s/snapshot)", camera_id, z.id, width,
                        height, camera_id, extra={"camera": camera_id, "zone": z.id, "width": width,
                                                  "height": height})
        return [z.id for z in outside]

    def store_totals(self, clock_ms: int | None = None) -> StoreTotals:
        """The store's occupancy, ins and outs now (:func:`~storelens.domain.counting.store_totals`): over
        :attr:`entrance_lines` (``store.entrance_lines``, else every line); a camera whose counts
        a reset at or before the store clock (or ``clock_ms``) voided (its frames behind, or none since) counts 0,
        and so does a camera without state (no frame of it yet)."""
        clock = self.store_alerts.clock_ms if clock_ms is None else clock_ms
        today = self._today(clock)
        return store_totals(self.entrance_lines,
                            [(o.value, o.total_in, o.total_out) for cam, o in self.occupancy.items() if cam in today],
                            self._entrance_counts(today))

    def _today(self, clock_ms: int | None) -> set[str]:
        """The cameras whose counts no reset at or before ``clock_ms`` voided."""
        return {cam for cam, o in self.occupancy.items()
                if clock_ms is None or not self.reset.stale(o.since_ms, clock_ms)}

    def _entrance_counts(self, cameras: set[str]) -> dict[str, dict[str, dict[str, int]]]:
        """The ``line_counts`` of :func:`~storelens.domain.counting.store_totals`: ins, outs and ``"clamped"`` of
        the entrance cameras among ``cameras``."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for cam, _ in self.entrance_lines:
            if cam in cameras and cam not in out and cam in self.counters:
                clamped = self.store_clamped.get(cam, {})
                out[cam] = {line: {**c, "clamped": clamped.get(line, 0)}
                            for line, c in self.counters[cam].counts().items()}
        return out

    def _clamp_store(self, camera_id: str, ts_ms: int, crossings: list[CrossingEvent]) -> None:
        """The store's occupancy over the entrance lines runs clamped at 0 at each of this frame's entrance
        crossings (:func:`~storelens.domain.counting.store_clamps`), at the store clock this frame moves it to; a
        camera whose frames are behind a reset the clock passed is not in the store's number and clamps nothing."""
        ours = sorted((ev for ev in crossings if (camera_id, ev.line_id) in self._entrance), key=lambda ev: ev.ts_ms)
        clock = max(ts_ms, self.store_alerts.clock_ms or ts_ms)
        today = self._today(clock)
        if not ours or camera_id not in today:
            return
        clamped = self.store_clamped.setdefault(camera_id, {})
        adds = store_clamps(self.entrance_lines, self._entrance_counts(today), [ev.direction for ev in ours])
        for ev, n in zip(ours, adds):
            if n:
                clamped[ev.line_id] = clamped.get(ev.line_id, 0) + n

    def _seed_clamp(self, camera_id: str, occupancy: int) -> None:
        """Keep on one of the camera's store lines what makes its part of the store's number ``occupancy`` (the
        camera's own clamped occupancy, as the store's number was the sum of them before it was kept over every line
        without ``store.entrance_lines``): ``occupancy`` minus its store lines' ins minus outs."""
        counter = self.counters.get(camera_id)
        lines = [line for cam, line in self.entrance_lines if cam == camera_id] if counter is not None else []
        counts = counter.counts() if counter is not None else {}
        lines = [line for line in lines if line in counts]
        if not lines:
            return
        net = sum(counts[line]["in"] - counts[line]["out"] for line in lines)
        self.store_clamped[camera_id] = {lines[0]: occupancy - net}

    def store_occupancy(self) -> int:
        """The store's occupancy now (the ``store_occupancy`` alert's value): :meth:`store_totals`."""
        return self.store_totals().occupancy

    def tick(self, now_ms: int) -> Outputs:
        """The runner's periodic call (every :attr:`tick_s`, wall time ``now_ms``): what needs time to pass
        without frames: alerts (``camera_down``), as records and on ``alerts``, and the daily reset's 0 rows
        (:meth:`reset_rows`), as records and on ``occupancy``."""
        alerts = self._store_outputs(self.store_alerts.tick(now_ms))
        rows = self.reset_rows(now_ms)
        return Outputs(records=[*rows, *alerts.records],
                       publish=[Publish(topics.OCCUPANCY, u.camera_id, u) for u in rows] + alerts.publish)

    def reset_rows(self, now_ms: int) -> list[m.OccupancyUpdate]:
        """The 0 rows of the cameras a reset voided without a frame since (down overnight, or no one in view
        and the detector sends nothing), so the stored and live rows (history ``occupancy``, Redis) are the
        0 that ``/v1/occupancy`` shows, not yesterday's numbers: one per camera and reset, stamped with the
        reset's time (a row of a later frame wins over it), and the store's row
        (:meth:`store_totals` at that time). "Now" is the API's: the wall clock ``now_ms`` on a site with a live
        camera, else the store clock (a file is not behind the wall clock). The counts themselves restart at
        the camera's next frame (:meth:`~storelens.domain.counting.Occupancy.follow`), as before: a frame still
        in flight from before the reset counts in the old day."""
        clock = self.store_alerts.clock_ms
        if self.store_alerts.live:
            clock = now_ms if clock is None else max(clock, now_ms)
        if clock is None:
            return []
        last = self.reset.last_reset_ms(clock)
        if last is None:
            return []
        rows = [m.OccupancyUpdate(camera_id=cam, ts_ms=last, occupancy=0, total_in=0, total_out=0)
                for cam, occ in sorted(self.occupancy.items())
                if self._zeroed.get(cam) != last and self.reset.stale(occ.since_ms, clock)]
        for u in rows:
            self._zeroed[u.camera_id] = last
        if rows:
            store = self.store_totals(clock)
            rows.append(m.OccupancyUpdate(camera_id=STORE_OCCUPANCY_ID, ts_ms=last, occupancy=store.occupancy,
                                          total_in=store.total_in, total_out=store.total_out))
        return rows

    def end_streams(self) -> Outputs:
        """End, as at the end of its stream (:meth:`process` of an end-of-stream frame), every camera whose stream
        is still open: the embedded run stops while a live camera (or a file not read to its end) runs, and its
        state is in memory only. Each camera ends at its last frame: its open zone visits get their exits, its
        open zone buckets, heatmap minute and hour, journeys and buying units are written. The end-of-stream
        frames are records too, so a replay of the stored frames ends there as well.

        Not called by the analytics service: its state outlives a restart (the changelog-backed table) and the
        next instance goes on from it, so ending there would give every open visit a false exit at each rolling
        restart or rebalance.
        """
        alerts = [a["alerts"] for a in self.analyzers.values() if "alerts" in a]
        for a in [*alerts, self.store_alerts]:  # a stop, not the end of a file (AlertAnalyzer.end, StoreAlerts.on_end)
            a.stopping = True
        try:
            outs = [self.handle(topics.TRACKS, m.TrackedFrame(camera_id=cam, seq=seq + 1, end_of_stream=True,
                                                              ts_ms=self.last_frame_ts.get(cam, 0)))
                    for cam, seq in sorted(self.last_seq.items()) if cam not in self.ended]
        finally:
            for a in [*alerts, self.store_alerts]:
                a.stopping = False
        return Outputs(records=[r for o in outs for r in o.records], publish=[p for o in outs for p in o.publish],
                       info={"ended": len(outs)})

    def _store_outputs(self, alerts: list) -> Outputs:
        return Outputs(records=list(alerts),
                       publish=[Publish(topics.ALERTS, _alert_key(a, self.config.store.id), a) for a in alerts])

    def camera_state(self, camera_id: str) -> dict:
        """JSON-serialisable state of one camera (for changelog-backed tables)."""
        occ = self.occupancy[camera_id]
        return {
            "last_seq": self.last_seq.get(camera_id, -1),
            "last_frame_ts_ms": self.last_frame_ts.get(camera_id),
            "ended": camera_id in self.ended,
            "counter": self.counters[camera_id].state(),
            "occupancy": [occ.value, occ.total_in, occ.total_out, occ.since_ms],
            "store_clamped": dict(self.store_clamped.get(camera_id, {})),
            # the store's number is kept over every line (store_lines) also without store.entrance_lines
            "store_ledger": 1,
            "windows": [[line, start, c[0], c[1]] for (cam, line, start), c in self._windows.items()
                        if cam == camera_id],
            "analyzers": {name: a.state() for name, a in self.analyzers[camera_id].items()},
            "store": self.store_alerts.state(),
            # what :meth:`close_removed_camera` needs of a state whose camera a later site version removed
            "site_version": self.site_version,
        }

    def load_camera_state(self, camera_id: str, state: dict) -> None:
        if camera_id not in self.counters:
            raise UnknownCamera(f"unknown camera {camera_id!r}")
        self.last_seq[camera_id] = int(state.get("last_seq", -1))
        last_ts = state.get("last_frame_ts_ms")  # none in a state saved before it: a marker is taken as dated
        if last_ts is None:
            self.last_frame_ts.pop(camera_id, None)
        else:
            self.last_frame_ts[camera_id] = int(last_ts)
        if state.get("ended"):
            self.ended.add(camera_id)
        self.counters[camera_id].load_state(state.get("counter", {}))
        occ = self.occupancy[camera_id]
        saved = state.get("occupancy", [0, 0, 0])
        occ.value, occ.total_in, occ.total_out = (int(v) for v in saved[:3])
        # a state saved before the reset setting: its counts are kept, the reset they run from taken at the next frame
        occ.since_ms = int(saved[3]) if len(saved) > 3 and saved[3] is not None else None
        # none in a state saved before it: the store's number is then ins minus outs until its next crossing
        self.store_clamped[camera_id] = {str(k): int(v) for k, v in state.get("store_clamped", {}).items()}
        if "store_ledger" not in state and entrance_lines_of(self.config) is None:
            # saved before every line was the store's without store.entrance_lines: the store's number was then the
            # sum of the cameras' own clamped occupancies, and it goes on from that sum
            self._seed_clamp(camera_id, occ.value)
        for key in [k for k in self._windows if k[0] == camera_id]:
            del self._windows[key]
        for line, start, cin, cout in state.get("windows", []):
            self._windows[(camera_id, line, int(start))] = [int(cin), int(cout)]
        analyzers = state.get("analyzers", {})
        for name, a in self.analyzers[camera_id].items():
            a.load_state(analyzers.get(name, {}))
        self.store_alerts.load_state(state.get("store", {}))
        # a snapshot saved before a site version removed or changed one of its rules (or every rule of the camera):
        # the open alerts of those rules are resolved with the camera's next frame, not dropped in silence
        self._closing.pop(camera_id, None)
        if analyzers.get("alerts", {}).get("open"):
            self._closing[camera_id] = analyzers["alerts"]

    def adopt_alerts(self, firing: Iterable[dict], now_ms: int) -> list[m.Alert]:
        """At the start of an embedded run: the alerts an earlier process left open in the history (rows of the
        ``alerts`` table the stage has not resolved: ``firing``, or resolved by hand while the condition went on) of
        the per-camera rules; rows of other kinds (an audit's ``count_accuracy``) are left alone. An alert whose rule
        is still in force (same camera, kind and zone; its threshold or hold may have changed) is taken over
        (:meth:`~storelens.stages.alerts.AlertAnalyzer.adopt`): it resolves when its condition has ended, and no
        second alert fires for the same incident. A file camera's is measured again from the re-read's frame that
        fired it (the same file and rule: the same alert, same id; another threshold, hold or file: resolved when the
        re-read says so). The others are returned ``resolved`` at ``now_ms`` (the rule or camera removed or changed,
        or an older alert of a rule whose newest is taken over). The store-wide ones (``store_occupancy``,
        ``camera_down``) likewise (:meth:`~storelens.stages.store_alerts.StoreAlerts.adopt`): an embedded stop leaves
        a live camera's ``camera_down`` open, and the next run goes on with it (one alert per outage) or resolves it
        when its rule went."""
        out: list[m.Alert] = []
        rows = sorted(firing, key=lambda r: -int(r["fired_ts_ms"]))  # the newest of a rule's is taken over
        live = {c.id for c in self.config.cameras if is_live(c.source)}
        for r in rows:
            if r["kind"] not in ALERT_KINDS:  # not a rule's (an audit's count_accuracy): not this stage's to close
                continue
            if r["kind"] in STORE_KINDS:
                out += self._adopt_store_alert(r, now_ms, live)
                continue
            cam = r["camera_id"]
            if not cam:
                continue
            entry = [r["alert_id"], int(r["fired_seq"]), r["kind"], r["zone_id"] or "", r["severity"],
                     float(r["threshold"])]
            state = {"open": {r["rule_id"]: entry}, "holds": {r["rule_id"]: {"fired_ms": int(r["fired_ts_ms"])}}}
            analyzer = self.analyzers.get(cam, {}).get("alerts")
            if analyzer is not None and analyzer.adopt(r, replay=cam not in live):
                continue
            closed = closed_alerts(self.config, cam, state, now_ms, int(r["fired_seq"]),
                                   "camera removed" if cam not in self.cameras else None)
            # else the rule still applies and a newer alert of it was taken over
            out += closed or closed_alerts(self.config, cam, state, now_ms, int(r["fired_seq"]), "process restarted")
        return out

    def resumable_cameras(self) -> list[str]:
        """The rows :meth:`resume_counts` takes (camera ids, and :data:`STORE_OCCUPANCY_ID` for the store's): the
        live cameras in force (their frames carry wall-clock times, so a restart goes on with the same day; a file
        is read again from its start, and its counts re-derived, not added again), and the store's when every
        camera of its lines (:func:`store_lines`) is live."""
        live = [c.id for c in self.config.cameras if is_live(c.source)]
        store = bool(self.entrance_lines) and all(cam in live for cam, _ in self.entrance_lines
                                                  if cam in self.counters)
        return live + ([STORE_OCCUPANCY_ID] if store else [])

    def resume_counts(self, rows: dict[str, m.OccupancyUpdate | None],
                      line_counts: dict[str, dict[str, dict[str, int]]], now_ms: int) -> list[str]:
        """At the start of an embedded run (its state is in memory only; the analytics service restores its state
        from its table instead, and never calls this): go on from the day's counts the previous process left in
        the history, so a restart mid-day does not set the occupancy, ins and outs back to 0 (nor the store's,
        nor the ``store_occupancy`` alert's). ``rows``: the latest stored occupancy row of each of
        :meth:`resumable_cameras` (``None``: none); ``line_counts``: camera -> line -> ``{"in", "out"}`` of the
        stored crossings since the latest reset at ``now_ms`` (the wall clock) up to the row. A row older than that
        reset (:meth:`OccupancyReset.void_at`: yesterday's) is not taken, and neither is a camera this stage has a
        frame of already. Each camera taken gets its row's occupancy, ins and outs (since that reset) and its lines'
        counts; the store's figure its row's occupancy: what its clamp absorbed so far (its occupancy minus the
        entrance lines' ins minus outs) is kept on one of its lines (:attr:`store_clamped`). Without a store's row to
        take (none today: a history written before the store's number was kept over every line; or a file camera
        among those of its lines) and without ``store.entrance_lines``, each camera taken counts its own row's
        occupancy in the store's number (the store's number of that history). Nothing with ``store.occupancy_reset``
        ``null`` (never): the stored crossings then go back to the retention's start while a camera's row counts since
        the start of the process that wrote it, so the lines' counts (and the store's ins and outs, their sums) would
        not match the cameras' (the counts start at 0, as before). The cameras taken."""
        since = self.reset.last_reset_ms(now_ms)
        if since is None:
            return []
        resumable = self.resumable_cameras()
        taken: list[str] = []
        for cam in resumable:
            row = rows.get(cam)
            if (cam == STORE_OCCUPANCY_ID or row is None or cam not in self.counters or cam in self.last_seq
                    or self.reset.void_at(row.ts_ms, now_ms)):
                continue
            occ = self.occupancy[cam]
            occ.value, occ.total_in, occ.total_out, occ.since_ms = row.occupancy, row.total_in, row.total_out, since
            self.counters[cam].set_counts(line_counts.get(cam, {}))
            self.store_clamped[cam] = {}
            taken.append(cam)
        row = rows.get(STORE_OCCUPANCY_ID)
        home = next(((cam, line) for cam, line in self.entrance_lines if cam in taken
                     and any(ln.id == line for ln in self.counters[cam].lines)), None)
        if STORE_OCCUPANCY_ID in resumable and row is not None and home is not None \
                and not self.reset.void_at(row.ts_ms, now_ms):
            counted = store_totals(self.entrance_lines, [], self._entrance_counts(set(taken)))
            self.store_clamped[home[0]][home[1]] = row.occupancy - (counted.total_in - counted.total_out)
            taken.append(STORE_OCCUPANCY_ID)
        elif entrance_lines_of(self.config) is None:
            # no store's row to go on from (a history written before the store's number was kept over every line
            # without store.entrance_lines, or a file among the cameras): each camera taken counts its own row's
            # occupancy in the store's number, as that number was before
            for cam in taken:
                self._seed_clamp(cam, self.occupancy[cam].value)
        return taken

    def resume_windows(self, windows: Iterable[m.CountWindow], now_ms: int) -> int:
        """At the start of an embedded run, with :meth:`resume_counts`: the count windows still open at ``now_ms``
        (the current ``counting.window_s`` window and the one before, which takes late crossings) go on from the
        stored rows of the live cameras (:meth:`resumable_cameras`), so the next crossing's window (an upsert of the
        row) adds to the crossings counted before the restart instead of replacing them. Rows of a file camera (read
        again from its start), of a camera this stage has a frame of already, of closed windows or of another
        window length are not taken. How many windows were taken."""
        win_s = self.config.counting.window_s
        oldest = window_start_ms(now_ms, win_s) - win_s * 1000
        live = set(self.resumable_cameras()) - {STORE_OCCUPANCY_ID}
        taken = 0
        for w in windows:
            if (w.camera_id not in live or w.camera_id in self.last_seq or w.window_start_ms < oldest
                    or w.window_end_ms - w.window_start_ms != win_s * 1000
                    or window_start_ms(w.window_start_ms, win_s) != w.window_start_ms):
                continue
            self._windows[(w.camera_id, w.line_id, w.window_start_ms)] = [w.count_in, w.count_out]
            taken += 1
        return taken

    def _adopt_store_alert(self, r: dict, now_ms: int, live: set[str]) -> list[m.Alert]:
        """:meth:`adopt_alerts` of a store-wide alert's row: taken over (:meth:`StoreAlerts.adopt`) when its rule
        stands; when its measure is read again from files (``store_occupancy`` of a files-only site, a file camera's
        ``camera_down``) measured again from its firing time, as a file camera's alert is (``replay``); else
        resolved at ``now_ms`` (its rule removed or changed, or an older alert of a rule taken over)."""
        sa = self.store_alerts
        cam = r["camera_id"] or ""
        entry = [r["alert_id"], int(r["fired_seq"]), r["kind"], cam, r["severity"], float(r["threshold"])]
        why = sa.orphan_reason(r["rule_id"], entry)
        if why is None:
            if sa.adopt(r, replay=not (sa.live if r["kind"] == "store_occupancy" else cam in live)):
                return []
            why = "process restarted"
        return [sa.resolved_message(r["rule_id"], entry, int(r["fired_ts_ms"]), now_ms, int(r["fired_seq"]), why)]

    def decode(self, topic: str, value: bytes):
        try:
            msg = decode_input(self, topic, value)
        except UnknownCamera:  # a camera removed by a site version: what was in flight is still taken
            msg = m.decode(self.inputs[topic], value)
            if msg.camera_id not in self.removed_cameras:
                raise
        if topic == topics.CUSTOMER_MATCHES and (not msg.event_id or not msg.customer_id):
            raise DecodeError("customer match without event_id or customer_id")
        return msg

    def apply_site(self, update: m.SiteUpdate) -> bool:
        """Put the cameras, lines and zones of a site edit in force, without a restart; ``False`` when not newer.

        A camera whose lines changed keeps its counts and each person's side of the lines that
        stayed (a moved line starts afresh: :meth:`LineCounter.forget_lines`); a camera whose zones or
        other settings changed gets new analyzers that go on from the old ones' state (open visits, journeys,
        heatmap minutes and the hour's sum, zone buckets, firing alerts; a removed zone's visits and buckets are
        dropped). So does a camera whose sampling or encoding changed (``jpeg_quality``, ``target_fps``, ...) or
        only its source's password: detect-track keeps its tracker, whose ids go on, so its people's visits and
        journeys go on too (new analyzers would leave the open visits without an exit, the journeys unwritten and
        the hour's heatmap row without the minutes before the edit). A re-pointed camera (another source or
        ``start_ts_ms``) does not keep them: ingest ends its old stream with an end-of-stream marker, which closes
        its visits and journeys here and starts a new tracker session in detect-track (new ids), as does a file's
        end. New cameras start empty, removed ones are forgotten. An invalid edit
        raises :class:`ConfigError` (dead-lettered). An open alert whose rule the version removes, moves to
        another camera or gives another kind or zone (or whose camera it removes) is resolved, at the camera's
        last frame (:func:`~storelens.stages.alerts.closed_alerts`); :meth:`handle` returns those messages.
        """
        if update.version <= self.site_version:
            return False
        new = with_site_update(self.config, update)
        cameras_now = {c.id for c in new.cameras}
        # the resolutions' time: the camera's last frame (the last one processed, :attr:`last_frame_ts`: a re-pointed
        # file's frames may go back in time; a state saved before it was kept: the highest time the camera reached),
        # else the store clock, else the version's (never before the alert fired: closed_alerts); a camera without a
        # frame in this process (a taken-over alert) has no time
        clock = self.store_alerts.clock_ms if self.store_alerts.clock_ms is not None else update.ts_ms
        for cam in sorted(set(self.analyzers) | set(self._closing)):
            alerts = self.analyzers.get(cam, {}).get("alerts")
            # a snapshot loaded without a frame since holds the alerts of rules already gone too
            state = self._closing.pop(cam, None) or (alerts.state() if alerts is not None else {})
            if state.get("open"):
                last_ts = self.last_frame_ts.get(cam, self.store_alerts.last_ts.get(cam, clock))
                self._site_closed += closed_alerts(new, cam, state, last_ts,
                                                   max(self.last_seq.get(cam, 0), 0),
                                                   None if cam in cameras_now else "camera removed")
        self._site_closed += self.store_alerts.close(new, update.ts_ms or None)
        rules_changed = new.alerts.rules != self.config.alerts.rules
        old = {c.id: c for c in self.config.cameras}
        for cam in new.cameras:
            before = old.pop(cam.id, None)
            if before is None or before.lines != cam.lines:
                counter = LineCounter(cam.id, cam.lines, new.counting)
                if before is not None:
                    counter.load_state(self.counters[cam.id].state())
                    was = {ln.id: ln for ln in before.lines}
                    counter.forget_lines({ln.id for ln in cam.lines if ln.id in was and was[ln.id] != ln})
                self.counters[cam.id] = counter
            if before is None:
                self.analyzers[cam.id] = build_analyzers(new, cam)
            elif rules_changed or before.model_copy(update={"lines": []}) != cam.model_copy(update={"lines": []}):
                # the new analyzers (new zones, rules, stream) go on from the old ones' state (each load_state
                # drops what no longer applies: removed zones, removed rules)
                fresh, kept = build_analyzers(new, cam), self.analyzers[cam.id]
                for name, a in fresh.items():
                    if name in kept:
                        a.load_state(kept[name].state())
                self.analyzers[cam.id] = fresh
            self.occupancy.setdefault(cam.id, Occupancy())
            self.store_clamped.setdefault(cam.id, {})
        # their open alerts were resolved above (a camera without state here: by close_removed_camera, if saved)
        self.removed_closed |= {gone for gone in old if gone in self.last_seq}
        for gone in old:
            for table in (self.counters, self.occupancy, self.analyzers, self.last_seq, self.last_frame_ts,
                          self.store_clamped):
                table.pop(gone, None)
            self.ended.discard(gone)
        if old or rules_changed:  # cameras removed (camera_down forgets them) or other store-wide rules
            store_alerts = StoreAlerts(new, self.store_occupancy)
            store_alerts.closed_ids = self.store_alerts.closed_ids
            store_alerts.load_state(self.store_alerts.state())
            self.store_alerts = store_alerts
        self.config, self.cameras, self.site_version = new, {c.id for c in new.cameras}, update.version
        # the site file's: a removed line counts nothing, no other line counts (without: every line in force)
        self.entrance_lines = store_lines(new)
        self._entrance = set(self.entrance_lines)
        self.removed_cameras = (self.removed_cameras | set(old)) - self.cameras
        self.removed_closed -= self.cameras
        return True

    def saved_under_newer_version(self, state: Any) -> bool:
        """Whether a saved camera state (:meth:`camera_state`) was saved under a newer site version than the one in
        force here: another worker's, the camera added again by a version this process has not seen yet; such a
        state is neither resolved nor dropped."""
        return isinstance(state, dict) and int(state.get("site_version") or 0) > self.site_version

    def close_removed_camera(self, camera_id: str, state: dict) -> Outputs | None:
        """The saved state (:meth:`camera_state`; the analytics service's table) of a camera the site in force no
        longer has, which this stage never held: a site version removed it while the service was down (or the site
        file lost it). Its open alerts, ``resolved`` (camera removed) at its last frame, as records and on
        ``alerts``, as :meth:`apply_site` resolves those of a camera it holds; the store-wide alert state it carries
        is loaded as any camera's (the newest wins), and its alerts of rules gone (the camera's ``camera_down``)
        resolved with them. ``None`` when it is not to be closed: the camera is in the
        site, or its alerts were resolved already in this process, or the state was saved under a newer site
        version than the one in force (this process has not seen the version that added the camera yet)."""
        if self.saved_under_newer_version(state) or camera_id in self.counters or camera_id in self.removed_closed:
            return None
        self.removed_closed.add(camera_id)
        self.store_alerts.load_state(state.get("store") or {})
        alerts = (state.get("analyzers") or {}).get("alerts") or {}
        last_ts = state.get("last_frame_ts_ms")  # (a state saved before it was kept: the highest time it reached)
        if last_ts is None:
            last_ts = (state.get("store") or {}).get("last_ts", {}).get(camera_id)
        ts = int(last_ts if last_ts is not None else self.store_alerts.clock_ms or 0)  # never before the firing
        closed = closed_alerts(self.config, camera_id, alerts, ts, max(int(state.get("last_seq", -1)), 0),
                               "camera removed") if alerts.get("open") else []
        # the store-wide alerts of the loaded state whose rule is gone (the camera's camera_down): now, as a version
        # does (apply_site), not at the next frame of another camera
        return self._store_outputs(closed + self.store_alerts.close(self.config, ts or None))

    def handle(self, topic: str, msg) -> Outputs:
        """Stage contract: records for the sinks (the frame, its events) and events to publish."""
        if topic == topics.SITE_CONFIG:
            applied = self.apply_site(msg)
            closed, self._site_closed = self._store_outputs(self._site_closed), []
            return Outputs(records=closed.records, publish=closed.publish,
                           info={"site_version": msg.version, "applied": applied})
        if topic != topics.TRACKS:
            return Outputs(records=[msg])
        msg = self.dated_end(msg)  # the marker's record (history ``frames``) has the time the camera ended at
        out = self.process(msg)
        if out.duplicate:
            return Outputs(duplicate=True)
        cam = msg.camera_id
        occupancy = [u for u in (out.occupancy, out.store_occupancy) if u is not None]
        analyzers = self.analyzers[cam].values()
        by_type = {t: topic for a in analyzers for t, topic in a.topics.items()}
        store = self._store_outputs([*out.closed_alerts, *out.store_alerts])
        return Outputs(
            records=[msg, *out.crossings, *occupancy, *out.windows, *out.analyzed, *store.records],
            publish=[Publish(topics.CROSSINGS, cam, ev.to_proto()) for ev in out.crossings]
            + [Publish(topics.OCCUPANCY, u.camera_id, u) for u in occupancy]
            + [Publish(topics.COUNTS, cam, w) for w in out.windows]
            + [Publish(by_type[type(r)], cam, r) for r in out.analyzed if type(r) in by_type] + store.publish,
            info={"crossings": len(out.crossings), "analyzed": len(out.analyzed),
                  **({"errors": out.errors} if out.errors else {})})

    def process(self, tf: m.TrackedFrame) -> AnalyticsOutput:
        counter = self.counters.get(tf.camera_id)
        if counter is None and tf.camera_id in self.removed_cameras:
            return AnalyticsOutput(duplicate=True)  # in flight when a site version removed the camera
        if counter is None:
            raise UnknownCamera(f"unknown camera {tf.camera_id!r}")
        out = AnalyticsOutput()
        if tf.end_of_stream:
            if tf.camera_id in self.ended or tf.seq <= self.last_seq.get(tf.camera_id, -1):
                out.duplicate = True  # the marker again, or an old one redelivered after later frames
                return out
            tf = self.dated_end(tf)
            self.ended.add(tf.camera_id)
            self._close_pending(tf, out)
            last = self.last_seq.get(tf.camera_id, -1)
            for a in self.analyzers[tf.camera_id].values():
                out.analyzed += a.end(max(last, 0), tf.ts_ms, list(out.analyzed))
            out.store_alerts = self.store_alerts.on_end(tf.camera_id, tf.ts_ms)
            return out
        if tf.seq <= self.last_seq.get(tf.camera_id, -1):
            out.duplicate = True  # redelivery: already counted
            return out
        self.last_seq[tf.camera_id] = tf.seq
        self.last_frame_ts[tf.camera_id] = tf.ts_ms
        self.ended.discard(tf.camera_id)
        self._close_pending(tf, out)
        outside = self.check_lines(tf.camera_id, tf.width, tf.height)
        if outside:
            out.errors[LINE_OUTSIDE_FRAME] = len(outside)
        if zones_outside := self.check_zones(tf.camera_id, tf.width, tf.height):
            out.errors[ZONE_OUTSIDE_FRAME] = len(zones_outside)
        occ = self.occupancy[tf.camera_id]
        restarted = occ.follow(self.reset, tf.ts_ms)  # before this frame's crossings: they are the new day's
        if restarted:
            counter.reset_counts()
            self.store_clamped[tf.camera_id] = {}
        people = [t for t in tf.tracks if not t.stationary]  # mannequins and standees are nobody
        ids = [t.track_id for t in people]
        boxes = np.array([[t.bbox_xyxy.x1, t.bbox_xyxy.y1, t.bbox_xyxy.x2, t.bbox_xyxy.y2] for t in people],
                         np.float64).reshape(-1, 4)
        out.crossings = counter.update(tf.seq, tf.ts_ms, ids, anchors_bottom_center(boxes),
                                       still_ids=[t.track_id for t in tf.tracks if t.stationary],
                                       heights=boxes[:, 3] - boxes[:, 1])
        if out.crossings:
            self._clamp_store(tf.camera_id, tf.ts_ms, out.crossings)
        for a in self.analyzers[tf.camera_id].values():
            view = FrameView(tf.camera_id, tf.seq, tf.ts_ms, tf.width, tf.height, ids, boxes, people,
                             crossings=out.crossings, prior=list(out.analyzed), detected=len(tf.tracks),
                             image_digest=tf.image_digest)
            out.analyzed += a.update(view)
            found = getattr(a, "errors", None)  # problems an analyzer found in the frame (journeys: bad appearance)
            if found:
                for reason, n in found.items():
                    out.errors[reason] = out.errors.get(reason, 0) + n
                found.clear()
        if out.crossings:
            win_s = self.config.counting.window_s
            touched = set()
            for ev in out.crossings:
                occ.apply(ev.direction)
                start = window_start_ms(ev.ts_ms, win_s)
                counts = self._windows.setdefault((ev.camera_id, ev.line_id, start), [0, 0])
                counts[0 if ev.direction == "in" else 1] += 1
                touched.add((ev.camera_id, ev.line_id, start))
            # keep open windows only: the current one and the one before (late events)
            oldest = window_start_ms(tf.ts_ms, win_s) - win_s * 1000
            for key in [k for k in self._windows if k[0] == tf.camera_id and k[2] < oldest and k not in touched]:
                del self._windows[key]
            for cam, line, start in sorted(touched):
                cin, cout = self._windows[(cam, line, start)]
                out.windows.append(m.CountWindow(camera_id=cam, line_id=line, window_start_ms=start,
                                                 window_end_ms=start + win_s * 1000, count_in=cin, count_out=cout))
        if out.crossings or restarted:
            out.occupancy = m.OccupancyUpdate(camera_id=tf.camera_id, ts_ms=tf.ts_ms, occupancy=occ.value,
                                              total_in=occ.total_in, total_out=occ.total_out)
        out.store_alerts = self.store_alerts.on_frame(tf.camera_id, tf.seq, tf.ts_ms)
        if out.crossings or restarted:
            # from the cameras whose state is here: an entrance camera that never sent a frame (offline all day)
            # counts 0, as /v1/occupancy counts it, and does not hold the row back (the analytics service loads
            # every entrance camera's persisted state before a frame: AnalyticsApp._sync_entrance_cameras);
            # with every camera's row (in the same batch: no reader sees one without the other), stamped with the
            # store clock (the latest frame time of any camera: a later row never has an earlier time, so the
            # stores' newer-wins upserts take every one)
            store = self.store_totals()
            out.store_occupancy = m.OccupancyUpdate(camera_id=STORE_OCCUPANCY_ID, ts_ms=self.store_alerts.clock_ms,
                                                    occupancy=store.occupancy, total_in=store.total_in,
                                                    total_out=store.total_out)
        return out

    def dated_end(self, tf: m.TrackedFrame) -> m.TrackedFrame:
        """``tf``, or, for an end-of-stream marker not dated at its camera's last frame, a copy dated at that frame.

        A stream ends at its last frame. The marker of a stream that ended while ingest was down (the camera
        re-pointed meanwhile) is dated at the new stream's time (a file's ``start_ts_ms``, the wall clock for a live
        source): before the old stream's last frame, the camera's open zone buckets and visits ended before it (an
        empty zone bucket row of a time the camera never showed); after it, the last frame's occupancy was held past
        it. The last frame is the last one processed (kept in the camera's saved state), not the highest time the
        camera reached: a re-pointed file's frames may go back in time. A camera without a frame here (a state saved
        before it was kept) keeps the marker's time.

        >>> from storelens.config import parse_config
        >>> stage = AnalyticsStage(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}))
        >>> _ = stage.handle(topics.TRACKS, m.TrackedFrame(camera_id="c", seq=0, ts_ms=9000))
        >>> stage.dated_end(m.TrackedFrame(camera_id="c", seq=1, ts_ms=2000, end_of_stream=True)).ts_ms
        9000
        """
        last = self.last_frame_ts.get(tf.camera_id)
        if not tf.end_of_stream or last is None or tf.ts_ms == last:
            return tf
        dated = m.TrackedFrame()
        dated.CopyFrom(tf)
        dated.ts_ms = last
        return dated

    def _close_pending(self, tf: m.TrackedFrame, out: AnalyticsOutput) -> None:
        """The alerts of the camera's loaded snapshot whose rule is no longer in force, resolved at this frame."""
        pending = self._closing.pop(tf.camera_id, None)
        if pending is not None:
            out.closed_alerts = closed_alerts(self.config, tf.camera_id, pending, tf.ts_ms, tf.seq)

    def line_counts(self, camera_id: str) -> dict[str, dict[str, int]]:
        return self.counters[camera_id].counts()


def derive(config: SiteConfig, frames: "Iterable[m.TrackedFrame]") -> list:
    """Run the analytics stage over tracked frames (no video, no models): every record it makes, in order.

    The rule code is the live stage's, so for the same frames and config the records are the
    same as live (crossings, occupancy, count windows, zone events and statistics, heatmaps, ...);
    a camera whose frames end with an end-of-stream frame is closed as live closes it.
    ``storelens replay`` and ``storelens zones`` use it.

    Example:
        >>> from storelens.config import parse_config
        >>> cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4",
        ...     "zones": [{"id": "z", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}]}]})
        >>> box = m.BoxXYXY(x1=40, y1=20, x2=60, y2=80)
        >>> frames = [m.TrackedFrame(camera_id="c", seq=i, ts_ms=i * 100, tracks=[m.Track(track_id=1, bbox_xyxy=box)])
        ...           for i in range(20)] + [m.TrackedFrame(camera_id="c", seq=20, ts_ms=1900, end_of_stream=True)]
        >>> [(r.kind, r.ts_ms) for r in derive(cfg, frames) if isinstance(r, m.ZoneEvent)]
        [(1, 0), (2, 1900)]
    """
    stage = AnalyticsStage(config)
    out: list = []
    for tf in frames:  # several cameras: interleave their frames by time (the store-level alerts' clock)
        res = stage.handle(topics.TRACKS, tf)
        out += [r for r in res.records if not isinstance(r, m.TrackedFrame)]
    return out
