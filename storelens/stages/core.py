"""Pipeline stages as message-in / messages-out processors.

The same stage objects run in the embedded pipeline (in-process bus) and in
the services (Kafka): a stage takes a decoded protobuf message and returns
the messages to publish. Malformed input raises :class:`DecodeError` (or
:class:`UnknownCamera`), which the runner turns into a dead letter.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from storelens.contract import messages as m
from storelens.config import SiteConfig
from storelens.domain.counting import CrossingEvent, LineCounter, Occupancy, window_start_ms
from storelens.backends.detectors import Detector
from storelens.errors import DecodeError
from storelens.stages.base import Outputs, Publish, UnknownCamera, decode_input
from storelens.contract import topics
from storelens.domain.geometry import anchors_bottom_center
from storelens.backends.video import decode_jpeg
from storelens.backends.trackers import Tracker

log = logging.getLogger(__name__)


#: Track ids are ``session base + tracker id``; the base is the tracker session's first
#: frame time in whole seconds times this (room for a million tracks per session).
TRACK_ID_SESSION_FACTOR = 1_000_000


def track_id_base(first_ts_ms: int) -> int:
    """Base of a tracker session's track ids: unique per camera and session, deterministic for a file.

    A tracker numbers its tracks from 1 every time it starts; without a base,
    the next day's track 1 would be mistaken for today's (history, tracks,
    customer matches are keyed by camera + track id). Ids stay below 2^53, so
    JSON clients read them exactly.

    >>> track_id_base(1_767_225_600_123)
    1767225600000000
    """
    return max(0, int(first_ts_ms) // 1000) * TRACK_ID_SESSION_FACTOR


class DetectTrackStage:
    """Frame -> TrackedFrame (boxes in source pixel coordinates), one tracker per camera.

    Track ids are camera-scoped and unique across tracker sessions (:func:`track_id_base`).
    A model failure stops the process (``on_error="stop"``): the frame is redelivered.
    """

    name = "detect-track"
    inputs = {topics.FRAMES: m.Frame}
    outputs = (topics.TRACKS, topics.PERSON_CROPS)
    on_error = "stop"

    def __init__(self, config: SiteConfig, detector: Detector, tracker_factory: Callable[[], Tracker]) -> None:
        self.cameras = {c.id for c in config.cameras}
        self.detector = detector
        self._tracker_factory = tracker_factory
        self._trackers: dict[str, Tracker] = {}
        #: Last processed seq per camera: redelivered or replayed frames are skipped.
        self.last_seq: dict[str, int] = {}
        self.crops_cfg = config.crops
        self._crop_seq: dict[tuple[str, int], int] = {}  # (camera, track) -> seq of its last crop
        self.last_crops: list[m.PersonCrop] = []
        #: camera -> base added to its tracker's ids (set by the session's first frame).
        self.id_base: dict[str, int] = {}

    def camera_snapshot(self, camera_id: str) -> bytes:
        """Tracker state + last seq of one camera (see :meth:`DeepSortTracker.snapshot`)."""
        import pickle

        return pickle.dumps({"last_seq": self.last_seq.get(camera_id, -1),
                             "tracker": self.tracker(camera_id).snapshot(),
                             "crop_seq": {t: s for (c, t), s in self._crop_seq.items() if c == camera_id},
                             "id_base": self.id_base.get(camera_id)})

    def restore_camera(self, camera_id: str, data: bytes) -> None:
        import pickle

        state = pickle.loads(data)  # noqa: S301 (our own state topic)
        self.last_seq[camera_id] = int(state["last_seq"])
        self.tracker(camera_id).restore(state["tracker"])
        for t, s in state.get("crop_seq", {}).items():
            self._crop_seq[(camera_id, int(t))] = int(s)
        if state.get("id_base") is not None:
            self.id_base[camera_id] = int(state["id_base"])

    def warm_up(self) -> None:
        """Build every camera's tracker (and its appearance model) before the first frame."""
        for cam in sorted(self.cameras):
            self.tracker(cam)

    def tracker(self, camera_id: str) -> Tracker:
        if camera_id not in self._trackers:
            self._trackers[camera_id] = self._tracker_factory()
        return self._trackers[camera_id]

    def decode(self, topic: str, value: bytes) -> m.Frame:
        return decode_input(self, topic, value)

    def handle(self, topic: str, frame: m.Frame) -> Outputs:
        """Stage contract: the tracked frame to ``tracks``, its person crops to ``person-crops``."""
        tf = self.process(frame)
        if tf is None:
            return Outputs(duplicate=True)
        cam = frame.camera_id
        return Outputs(publish=[Publish(topics.TRACKS, cam, tf)]
                       + [Publish(topics.PERSON_CROPS, cam, c) for c in self.last_crops])

    def process(self, frame: m.Frame) -> m.TrackedFrame | None:
        """Track one frame; ``None`` for a frame already processed (redelivery)."""
        if frame.camera_id not in self.cameras:
            raise UnknownCamera(f"unknown camera {frame.camera_id!r}")
        if not frame.end_of_stream:
            if frame.seq <= self.last_seq.get(frame.camera_id, -1):
                return None
        out = m.TrackedFrame(camera_id=frame.camera_id, seq=frame.seq, ts_ms=frame.ts_ms,
                             source_frame=frame.source_frame, end_of_stream=frame.end_of_stream,
                             width=frame.source_width or frame.width, height=frame.source_height or frame.height)
        if frame.end_of_stream:
            self.last_crops = [m.PersonCrop(camera_id=frame.camera_id, seq=frame.seq, ts_ms=frame.ts_ms,
                                            end_of_stream=True)]
            return out
        image = decode_jpeg(frame)
        dets = self.detector.detect(image)
        tracks = self.tracker(frame.camera_id).update(image, dets)
        self.last_seq[frame.camera_id] = frame.seq
        base = self.id_base.setdefault(frame.camera_id, track_id_base(frame.ts_ms))
        if base:
            tracks = replace(tracks, track_id=tracks.track_id + base)
        sx = out.width / image.shape[1]
        sy = out.height / image.shape[0]
        boxes = tracks.bbox_xyxy * np.array([sx, sy, sx, sy], np.float32)
        for tid, (x1, y1, x2, y2), conf, cls in zip(tracks.track_id, boxes, tracks.confidence, tracks.class_id):
            out.tracks.add(track_id=int(tid), bbox_xyxy=m.BoxXYXY(x1=x1, y1=y1, x2=x2, y2=y2),
                           confidence=float(conf), class_id=int(cls))
        appearance = getattr(tracks, "appearance", None)  # per-track embeddings, when the tracker has them
        if appearance is not None:
            for t, emb in zip(out.tracks, appearance):
                t.appearance.extend(emb.tolist())
        self.last_crops = self._crops(frame, image, tracks, boxes)
        return out

    def _crops(self, frame: m.Frame, image: np.ndarray, tracks, boxes_src: np.ndarray) -> list[m.PersonCrop]:
        """At most one crop per track every ``crops.every_n_frames`` of its frames (source-pixel boxes)."""
        cfg = self.crops_cfg
        if not cfg.every_n_frames:
            return []
        import cv2

        out = []
        for tid, box, src in zip(tracks.track_id, tracks.bbox_xyxy, boxes_src):
            key = (frame.camera_id, int(tid))
            if frame.seq - self._crop_seq.get(key, -10**9) < cfg.every_n_frames:
                continue
            if src[3] - src[1] < cfg.min_height_px:
                continue
            x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
            x2, y2 = min(image.shape[1], int(np.ceil(box[2]))), min(image.shape[0], int(np.ceil(box[3])))
            if x2 <= x1 or y2 <= y1:
                continue
            ok, buf = cv2.imencode(".jpg", image[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
            if not ok:
                continue
            self._crop_seq[key] = frame.seq
            out.append(m.PersonCrop(camera_id=frame.camera_id, seq=frame.seq, ts_ms=frame.ts_ms, track_id=int(tid),
                                    bbox_xyxy=m.BoxXYXY(x1=src[0], y1=src[1], x2=src[2], y2=src[3]),
                                    jpeg=buf.tobytes()))
        return out


def build_detect_track(config: SiteConfig, detector: Detector | None = None,
                       tracker_factory: Callable[[], Tracker] | None = None,
                       stage: DetectTrackStage | None = None) -> DetectTrackStage:
    """The detect-track stage with the site's detector and tracker (or the ones given, or ``stage`` itself)."""
    if stage is not None:
        return stage
    from storelens.backends.detectors import build_detector
    from storelens.backends.trackers import build_tracker

    detector = detector or build_detector(config.detector)
    return DetectTrackStage(config, detector, tracker_factory or (lambda: build_tracker(config.tracker)))


@dataclass
class AnalyticsOutput:
    crossings: list[CrossingEvent] = field(default_factory=list)
    occupancy: m.OccupancyUpdate | None = None
    windows: list[m.CountWindow] = field(default_factory=list)
    duplicate: bool = False


class AnalyticsStage:
    """TrackedFrame -> crossings, occupancy and per-window counts, per camera.

    As a stage (:meth:`handle`) it also takes the faces services' outputs
    (``track-attributes``, ``customer-matches``) as records for the history store;
    they change no state here, so redeliveries are harmless (the store upserts).
    """

    name = "analytics"
    inputs = {topics.TRACKS: m.TrackedFrame, topics.TRACK_ATTRIBUTES: m.TrackAttributes,
              topics.CUSTOMER_MATCHES: m.CustomerMatch}
    outputs = (topics.CROSSINGS, topics.OCCUPANCY, topics.COUNTS)
    on_error = "dead_letter"

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.cameras = {c.id for c in config.cameras}
        self.counters = {c.id: LineCounter(c.id, c.lines, config.counting) for c in config.cameras}
        self.occupancy = {c.id: Occupancy() for c in config.cameras}
        self._windows: dict[tuple[str, str, int], list[int]] = {}
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
        if msg.end_of_stream:
            return Outputs()
        cam = msg.camera_id
        occupancy = [out.occupancy] if out.occupancy is not None else []
        return Outputs(
            records=[msg, *out.crossings, *occupancy, *out.windows],
            publish=[Publish(topics.CROSSINGS, cam, ev.to_proto()) for ev in out.crossings]
            + [Publish(topics.OCCUPANCY, cam, u) for u in occupancy]
            + [Publish(topics.COUNTS, cam, w) for w in out.windows],
            info={"crossings": len(out.crossings)})

    def process(self, tf: m.TrackedFrame) -> AnalyticsOutput:
        counter = self.counters.get(tf.camera_id)
        if counter is None:
            raise UnknownCamera(f"unknown camera {tf.camera_id!r}")
        out = AnalyticsOutput()
        if tf.end_of_stream:
            self.ended.add(tf.camera_id)
            return out
        if tf.seq <= self.last_seq.get(tf.camera_id, -1):
            out.duplicate = True  # redelivery: already counted
            return out
        self.last_seq[tf.camera_id] = tf.seq
        ids = [t.track_id for t in tf.tracks]
        boxes = np.array([[t.bbox_xyxy.x1, t.bbox_xyxy.y1, t.bbox_xyxy.x2, t.bbox_xyxy.y2] for t in tf.tracks],
                         np.float64).reshape(-1, 4)
        out.crossings = counter.update(tf.seq, tf.ts_ms, ids, anchors_bottom_center(boxes))
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
