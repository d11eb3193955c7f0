"""The analytics stage: tracked frames -> crossings, occupancy, count windows (and zones, heatmaps).

Pure: no I/O. Its per-camera state is JSON-serialisable (:meth:`AnalyticsStage.camera_state`)
so the faust host keeps it in a changelog-backed table and the embedded mode in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from storelens.config import SiteConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import CrossingEvent, LineCounter, Occupancy, window_start_ms
from storelens.domain.geometry import anchors_bottom_center
from storelens.errors import DecodeError
from storelens.stages.analyzers import CameraAnalyzer, FrameView, build_analyzers
from storelens.stages.base import Outputs, Publish, UnknownCamera, decode_input


@dataclass
class AnalyticsOutput:
    crossings: list[CrossingEvent] = field(default_factory=list)
    occupancy: m.OccupancyUpdate | None = None
    windows: list[m.CountWindow] = field(default_factory=list)
    #: What the camera's analyzers returned (zone events, statistics, heatmaps, ...), in order.
    analyzed: list = field(default_factory=list)
    duplicate: bool = False


class AnalyticsStage:
    """TrackedFrame -> crossings, occupancy and per-window counts, per camera.

    As a stage (:meth:`handle`) it also takes the faces services' outputs
    (``track-attributes``, ``customer-matches``) as records for the history store;
    they change no state here, so redeliveries are harmless (the store upserts).
    """

    name = "analytics"
    inputs = {topics.TRACKS: m.TrackedFrame, topics.TRACK_ATTRIBUTES: m.TrackAttributes,
              topics.CUSTOMER_MATCHES: m.CustomerMatch, topics.CAMERA_SNAPSHOTS: m.CameraSnapshot}
    outputs = (topics.CROSSINGS, topics.OCCUPANCY, topics.COUNTS, topics.ZONE_EVENTS, topics.ZONE_STATS,
               topics.ZONE_OCCUPANCY, topics.HEATMAPS, topics.TRACK_SUMMARIES, topics.ALERTS)
    on_error = "dead_letter"

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.cameras = {c.id for c in config.cameras}
        self.counters = {c.id: LineCounter(c.id, c.lines, config.counting) for c in config.cameras}
        self.occupancy = {c.id: Occupancy() for c in config.cameras}
        self._windows: dict[tuple[str, str, int], list[int]] = {}
        #: camera id -> analyzer name -> analyzer (zones, heatmaps, ...; see :mod:`storelens.stages.analyzers`).
        self.analyzers: dict[str, dict[str, CameraAnalyzer]] = {c.id: build_analyzers(config, c)
                                                                for c in config.cameras}
        #: Last processed seq per camera: redelivered or replayed frames are skipped.
        self.last_seq: dict[str, int] = {}
        self.ended: set[str] = set()

    def camera_state(self, camera_id: str) -> dict:
        """JSON-serialisable state of one camera (for changelog-backed tables)."""
        occ = self.occupancy[camera_id]
        return {
            "last_seq": self.last_seq.get(camera_id, -1),
            "ended": camera_id in self.ended,
            "counter": self.counters[camera_id].state(),
            "occupancy": [occ.value, occ.total_in, occ.total_out],
            "windows": [[line, start, c[0], c[1]] for (cam, line, start), c in self._windows.items()
                        if cam == camera_id],
            "analyzers": {name: a.state() for name, a in self.analyzers[camera_id].items()},
        }

    def load_camera_state(self, camera_id: str, state: dict) -> None:
        if camera_id not in self.counters:
            raise UnknownCamera(f"unknown camera {camera_id!r}")
        self.last_seq[camera_id] = int(state.get("last_seq", -1))
        if state.get("ended"):
            self.ended.add(camera_id)
        self.counters[camera_id].load_state(state.get("counter", {}))
        occ = self.occupancy[camera_id]
        occ.value, occ.total_in, occ.total_out = (int(v) for v in state.get("occupancy", [0, 0, 0]))
        for key in [k for k in self._windows if k[0] == camera_id]:
            del self._windows[key]
        for line, start, cin, cout in state.get("windows", []):
            self._windows[(camera_id, line, int(start))] = [int(cin), int(cout)]
        analyzers = state.get("analyzers", {})
        for name, a in self.analyzers[camera_id].items():
            a.load_state(analyzers.get(name, {}))

    def decode(self, topic: str, value: bytes):
        msg = decode_input(self, topic, value)
        if topic == topics.CUSTOMER_MATCHES and (not msg.event_id or not msg.customer_id):
            raise DecodeError("customer match without event_id or customer_id")
        return msg

    def handle(self, topic: str, msg) -> Outputs:
        """Stage contract: records for the sinks (the frame, its events) and events to publish."""
        if topic != topics.TRACKS:
            return Outputs(records=[msg])
        out = self.process(msg)
        if out.duplicate:
            return Outputs(duplicate=True)
        cam = msg.camera_id
        occupancy = [out.occupancy] if out.occupancy is not None else []
        analyzers = self.analyzers[cam].values()
        by_type = {t: topic for a in analyzers for t, topic in a.topics.items()}
        return Outputs(
            records=[msg, *out.crossings, *occupancy, *out.windows, *out.analyzed],
            publish=[Publish(topics.CROSSINGS, cam, ev.to_proto()) for ev in out.crossings]
            + [Publish(topics.OCCUPANCY, cam, u) for u in occupancy]
            + [Publish(topics.COUNTS, cam, w) for w in out.windows]
            + [Publish(by_type[type(r)], cam, r) for r in out.analyzed if type(r) in by_type],
            info={"crossings": len(out.crossings), "analyzed": len(out.analyzed)})

    def process(self, tf: m.TrackedFrame) -> AnalyticsOutput:
        counter = self.counters.get(tf.camera_id)
        if counter is None:
            raise UnknownCamera(f"unknown camera {tf.camera_id!r}")
        out = AnalyticsOutput()
        if tf.end_of_stream:
            if tf.camera_id in self.ended:
                out.duplicate = True
                return out
            self.ended.add(tf.camera_id)
            last = self.last_seq.get(tf.camera_id, -1)
            for a in self.analyzers[tf.camera_id].values():
                out.analyzed += a.end(max(last, 0), tf.ts_ms, list(out.analyzed))
            return out
        if tf.seq <= self.last_seq.get(tf.camera_id, -1):
            out.duplicate = True  # redelivery: already counted
            return out
        self.last_seq[tf.camera_id] = tf.seq
        self.ended.discard(tf.camera_id)
        people = [t for t in tf.tracks if not t.stationary]  # mannequins and standees are nobody
        ids = [t.track_id for t in people]
        boxes = np.array([[t.bbox_xyxy.x1, t.bbox_xyxy.y1, t.bbox_xyxy.x2, t.bbox_xyxy.y2] for t in people],
                         np.float64).reshape(-1, 4)
        out.crossings = counter.update(tf.seq, tf.ts_ms, ids, anchors_bottom_center(boxes))
        for a in self.analyzers[tf.camera_id].values():
            view = FrameView(tf.camera_id, tf.seq, tf.ts_ms, tf.width, tf.height, ids, boxes, people,
                             crossings=out.crossings, prior=list(out.analyzed))
            out.analyzed += a.update(view)
        if out.crossings:
            occ = self.occupancy[tf.camera_id]
            win_s = self.config.counting.window_s
            touched = set()
            for ev in out.crossings:
                occ.apply(ev.direction)
                start = window_start_ms(ev.ts_ms, win_s)
                counts = self._windows.setdefault((ev.camera_id, ev.line_id, start), [0, 0])
                counts[0 if ev.direction == "in" else 1] += 1
                touched.add((ev.camera_id, ev.line_id, start))
            out.occupancy = m.OccupancyUpdate(camera_id=tf.camera_id, ts_ms=tf.ts_ms, occupancy=occ.value,
                                              total_in=occ.total_in, total_out=occ.total_out)
            # keep open windows only: the current one and the one before (late events)
            oldest = window_start_ms(tf.ts_ms, win_s) - win_s * 1000
            for key in [k for k in self._windows if k[0] == tf.camera_id and k[2] < oldest and k not in touched]:
                del self._windows[key]
            for cam, line, start in sorted(touched):
                cin, cout = self._windows[(cam, line, start)]
                out.windows.append(m.CountWindow(camera_id=cam, line_id=line, window_start_ms=start,
                                                 window_end_ms=start + win_s * 1000, count_in=cin, count_out=cout))
        return out

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
    for tf in frames:
        res = stage.handle(topics.TRACKS, tf)
        out += [r for r in res.records if not isinstance(r, m.TrackedFrame)]
    return out
