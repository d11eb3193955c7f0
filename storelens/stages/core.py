"""Pipeline stages as message-in / messages-out processors.

The same stage objects run in the embedded pipeline (in-process bus) and in
the services (Kafka): a stage takes a decoded protobuf message and returns
the messages to publish. Malformed input raises :class:`DecodeError` (or
:class:`UnknownCamera`), which the runner turns into a dead letter.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from storelens.contract import messages as m
from storelens.config import SiteConfig
from storelens.backends.detectors import Detector
from storelens.backends.detectors.base import Detections, detect_many
from storelens.stages.base import Outputs, Publish, UnknownCamera
from storelens.contract import topics
from storelens.backends.video import SHRINK_QUALITIES, decode_frame
from storelens.backends.trackers import Tracker, Tracks
from storelens.backends.trackers.base import (
    FrameRateAware,
    RefindWindowAware,
    restorable_formats,
    shared_embedder,
    snapshot_format,
)
from storelens.domain.framerate import FrameRate
from storelens.domain.stationary import StationaryFilter
from storelens.stages.site_cameras import SiteCameras, decode_site_input
from storelens.stages.snapshots import Snapshotter

log = logging.getLogger(__name__)

#: ``storelens_errors_total`` reason of detections left out before tracking: a box not finite (NaN, inf) or of no
#: width or height (:meth:`~storelens.backends.detectors.base.Detections.well_formed`).
BAD_BOX = "bad_box"


@dataclass
class _Job:
    """A frame past its checks: its tracked frame so far and its decoded image (``None``: end of stream)."""

    frame: m.Frame
    out: m.TrackedFrame
    image: np.ndarray | None
    #: Detections of the frame left out before tracking (:data:`BAD_BOX`).
    bad_boxes: int = 0


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
    Tracks that have not moved since they appeared (mannequins) go out with ``stationary``
    set (:class:`~storelens.domain.stationary.StationaryFilter`, ``stationary:`` in the site file).
    A model failure stops the process (``on_error="stop"``): the frame is redelivered.

    Site versions saved through ``/v1/site`` come on ``site-config`` (:meth:`apply_site`): frames of an
    added camera are tracked from then on, a removed camera's tracker is dropped (its frames still in
    flight are skipped, not dead-lettered).
    """

    name = "detect-track"
    inputs = {topics.FRAMES: m.Frame, topics.SITE_CONFIG: m.SiteUpdate}
    outputs = (topics.TRACKS, topics.PERSON_CROPS, topics.CAMERA_SNAPSHOTS)
    on_error = "stop"

    def __init__(self, config: SiteConfig, detector: Detector, tracker_factory: Callable[[], Tracker]) -> None:
        #: The cameras in force (the site file's, then each site version's; see :meth:`apply_site`).
        self.site = SiteCameras(config)
        self.cameras = self.site.ids
        self.detector = detector
        self._tracker_factory = tracker_factory
        self._trackers: dict[str, Tracker] = {}
        self._rates: dict[str, FrameRate] = {}  # camera -> the rate its frames come at
        #: Last processed seq per camera: redelivered or replayed frames are skipped.
        self.last_seq: dict[str, int] = {}
        self.crops_cfg = config.crops
        self.snapshots = Snapshotter(config)  # reference frames, faces blurred (heatmaps)
        #: camera -> track -> seq of its last crop (only tracks cropped within ``crops.every_n_frames``).
        self._crop_seq: dict[str, dict[int, int]] = {}
        self.last_crops: list[m.PersonCrop] = []
        #: Problems found in the last frame finished: ``storelens_errors_total`` reason -> how many (:data:`BAD_BOX`).
        self.last_errors: dict[str, int] = {}
        self._bad_box_logged: set[str] = set()  # cameras whose bad boxes were logged (once per camera)
        #: camera -> base added to its tracker's ids (set by the session's first frame).
        self.id_base: dict[str, int] = {}
        self.stationary_cfg = config.stationary
        self._stationary: dict[str, StationaryFilter] = {}
        #: The staff uniform cue (``staff.uniform``), if configured: marks ``Track.staff_uniform``.
        self.uniform = None
        if config.staff.uniform is not None:
            from storelens.stages.staff import UniformStaffMarker

            self.uniform = UniformStaffMarker(config)

    def camera_snapshot(self, camera_id: str) -> bytes:
        """Tracker state + last seq + stationary filter of one camera (see :meth:`DeepSortTracker.snapshot`)."""
        import pickle

        tracker = self._trackers.get(camera_id)  # none after the camera's stream ended (built at its next frame)
        rate = self._rates.get(camera_id)
        return pickle.dumps({"last_seq": self.last_seq.get(camera_id, -1),
                             "last_ts_ms": None if rate is None else rate.last_ts_ms,
                             "frame_interval_ms": None if rate is None else rate.interval_ms,
                             "tracker": None if tracker is None else tracker.snapshot(),
                             "tracker_format": None if tracker is None else snapshot_format(tracker),
                             "crop_seq": dict(self._crop_seq.get(camera_id, {})),
                             "id_base": self.id_base.get(camera_id),
                             "stationary": self.stationary(camera_id).state(),
                             "uniform": self.uniform.state(camera_id) if self.uniform is not None else None})

    def restore_camera(self, camera_id: str, data: bytes) -> str | None:
        """Put one camera's state of :meth:`camera_snapshot` back; ``None``, or why its tracker state was not.

        A tracker state saved by another backend, version, appearance embedder or embedder model (``tracker.backend``,
        ``tracker.embedder`` or its weights switched; its tag, :func:`~storelens.backends.trackers.base.
        snapshot_format`; a tag older than the model's is taken with the default weights only) or that
        does not restore (an older snapshot, untagged or tagged without its embedder, of another backend or whose
        features are not of the embedder's length; an unpickling error) is logged with the camera and the reason,
        and the camera starts a new tracker session: a fresh tracker, its ids above the old session's (as after an
        end of stream), its frames up to the saved ``last_seq`` still skipped.
        """
        import pickle

        try:  # the state topic is writable by the store's services only (unpickling can run code)
            state = pickle.loads(data)  # noqa: S301
            last_seq = int(state["last_seq"])
        except Exception as exc:  # noqa: BLE001 (unpickling fails with any exception type)
            dropped = f"the camera state does not unpickle ({type(exc).__name__}: {exc})"
            log.warning("tracker state not restored: the camera starts a new tracker session",
                        extra={"camera": camera_id, "reason": dropped})
            self._new_session(camera_id)
            return dropped
        self.last_seq[camera_id] = last_seq
        dropped = None
        if state.get("tracker") is None:
            self._trackers.pop(camera_id, None)
        else:
            dropped = self._restore_tracker(camera_id, state["tracker"], state.get("tracker_format"))
        if state.get("id_base") is not None:
            self.id_base[camera_id] = int(state["id_base"])
        if dropped is not None:
            log.warning("tracker state not restored: the camera starts a new tracker session",
                        extra={"camera": camera_id, "reason": dropped})
            self._new_session(camera_id)
        else:
            self._crop_seq[camera_id] = {int(t): int(s) for t, s in state.get("crop_seq", {}).items()}
            if state.get("tracker") is not None and state.get("last_ts_ms") is not None:
                # a break since the saved last frame ends the session as without the restart (_timed_tracker)
                self._rates[camera_id] = FrameRate.resumed(state["last_ts_ms"], state.get("frame_interval_ms"))
            if state.get("stationary") is not None:
                self.stationary(camera_id).load_state(state["stationary"])
        if state.get("uniform") is not None and self.uniform is not None:
            self.uniform.load_state(camera_id, state["uniform"])
        return dropped

    def _restore_tracker(self, camera_id: str, data: bytes, fmt: str | None) -> str | None:
        """The camera's tracker restored from ``data`` (tagged ``fmt``); else a fresh one and the reason."""
        tracker = self.tracker(camera_id)
        want = snapshot_format(tracker)
        if fmt not in restorable_formats(tracker):  # an older tag (or none): of the default weights only
            reason = (f"saved by {fmt!r}, the tracker is {want!r} (tracker.backend, tracker.embedder or its weights "
                      f"changed?)")
        else:
            try:
                tracker.restore(data)
                return None
            except Exception as exc:  # noqa: BLE001 (a state that cannot be read must not stop the service)
                reason = f"{want!r} could not restore it: {type(exc).__name__}: {exc}"
        self._trackers[camera_id] = self._tracker_factory()  # nothing of a half-restored state
        return reason

    def warm_up(self) -> None:
        """Build every camera's tracker (and its appearance model) and the snapshots' face detector (when they
        blur faces) before the first frame: a missing model file fails the start, not the first frame."""
        for cam in sorted(self.cameras):
            self.tracker(cam)
        self.snapshots.warm_up()

    def stationary(self, camera_id: str) -> StationaryFilter:
        """The camera's stationary-object filter (made on first use)."""
        if camera_id not in self._stationary:
            self._stationary[camera_id] = StationaryFilter(self.stationary_cfg)
        return self._stationary[camera_id]

    def tracker(self, camera_id: str) -> Tracker:
        if camera_id not in self._trackers:
            self._trackers[camera_id] = self._tracker_factory()
        return self._trackers[camera_id]

    def _timed_tracker(self, frame: m.Frame) -> Tracker:
        """The camera's tracker, told the rate its frames really come at (from their timestamps) when it moved.

        A break in the camera's frames longer than its tracker keeps a lost track (a reconnect, a stalled camera:
        :meth:`_break_ends_session`) starts a new tracker session first: the tracker counts frames, and took the
        frame after the break for the next one, so a person after it took an id of before it. The ended session's
        tracks end as lost tracks do (analytics closes their visits after ``lost_after_ms`` of camera time).
        The camera's stationary filter and reference frame go on (the same view): the filter bridges the new ids
        to the old tracks and places (a mannequin stays flagged, a still shopper is not flagged anew)."""
        cam = frame.camera_id
        rate = self._rates.setdefault(cam, FrameRate())
        told = None
        if self._break_ends_session(cam, rate, frame.ts_ms):
            self._new_session(cam, same_view=True)
            self._rates[cam] = rate  # the camera's rate goes on: the new tracker is told it at once
            told = rate.reported
        tracker = self.tracker(cam)
        fps = rate.update(frame.ts_ms)
        fps = told if fps is None else fps
        if fps is not None and isinstance(tracker, FrameRateAware):
            tracker.set_frame_rate(fps)
        return tracker

    def _break_ends_session(self, camera_id: str, rate: FrameRate, ts_ms: int) -> bool:
        """Whether the time since the camera's last frame is longer than its tracker's re-find window at the rate
        its frames came at (``refind_window_ms``: ``track_buffer`` at that rate, and one frame, for ``bytereid``;
        ``max_age`` + 1 frames for ``deepsort``); never before that rate is known."""
        tracker = self._trackers.get(camera_id)
        last, interval = rate.last_ts_ms, rate.interval_ms
        if tracker is None or last is None or interval is None or not isinstance(tracker, RefindWindowAware):
            return False
        window = tracker.refind_window_ms(interval)
        if ts_ms - last <= window:
            return False
        log.info("a break in the camera's frames longer than its tracker keeps a lost track: a new tracker session "
                 "(new track ids)",
                 extra={"camera": camera_id, "gap_ms": ts_ms - last, "refind_window_ms": round(window)})
        return True

    def _well_formed(self, job: _Job, dets: Detections) -> Detections:
        """``dets`` without the detections no tracker can take (a box not finite or of no width or height):
        counted (:data:`BAD_BOX`) and logged once per camera; marked checked, so the tracker does not check them
        again (:attr:`~storelens.backends.detectors.base.Detections.checked`)."""
        kept, job.bad_boxes = dets.well_formed_only()
        if not job.bad_boxes:
            return kept
        cam = job.frame.camera_id
        if cam not in self._bad_box_logged:
            self._bad_box_logged.add(cam)
            log.warning("the detector gave boxes that are not finite or have no width or height: left out (counted "
                        "in storelens_errors_total{reason=\"bad_box\"}, logged once per camera)",
                        extra={"camera": cam, "seq": job.frame.seq, "bad_boxes": job.bad_boxes})
        return kept

    @property
    def site_version(self) -> int:
        """The site version in force (0: the site file's)."""
        return self.site.version

    def apply_site(self, update: m.SiteUpdate) -> bool:
        """Put the cameras of a site version in force; ``False`` when not newer (or of another store).

        Added cameras are accepted from now on (their tracker is made on their first frame);
        removed cameras' trackers and per-camera state are dropped. A camera whose source changed
        keeps its tracker (its track ids go on), unless its old stream ended with an end-of-stream marker (ingest
        sends one for a re-pointed camera, live or file: :meth:`_end_stream`). Raises
        :class:`~storelens.stages.site_cameras.InvalidSiteVersion`
        for an invalid list (a dead letter).
        """
        diff = self.site.apply(update)
        if diff is None:
            return False
        for cam in diff.removed:
            self.forget_camera(cam)
        return True

    def decode(self, topic: str, value: bytes) -> m.Frame | m.SiteUpdate:
        return decode_site_input(self, topic, value, self.site)

    def handle(self, topic: str, frame: m.Frame) -> Outputs:
        """Stage contract: the tracked frame to ``tracks``, its person crops to ``person-crops``."""
        if topic == topics.SITE_CONFIG:
            return Outputs(info={"site_version": frame.version, "applied": self.apply_site(frame)})
        if self.site.gone(frame.camera_id):  # in flight when a site version removed the camera
            return Outputs(duplicate=True)
        return self._outputs(frame, self.process(frame))

    def handle_batch(self, topic: str, frames: list[m.Frame]) -> list[Outputs]:
        """Stage contract: frames of different cameras at once, the same outputs as :meth:`handle` on each.

        The frames' images go through ONE detector call (:func:`~storelens.backends.detectors.base.detect_many`)
        and, when every camera's tracker can share it (``bytereid``: one embedder with ``embed_many``),
        ONE re-id inference for the crops of every camera; then each frame is finished as alone
        (:meth:`_finish`). Every check that dead-letters a frame (unknown camera, corrupt JPEG) runs before
        anything changes, so the runner can fall back to :meth:`handle` frame by frame.
        """
        if topic != topics.FRAMES or len({f.camera_id for f in frames}) < len(frames):
            return [self.handle(topic, f) for f in frames]  # a camera twice: its frames one after the other
        jobs = [None if self.site.gone(f.camera_id) else self._prepare(f) for f in frames]
        live = [j for j in jobs if j is not None and j.image is not None]
        dets = [self._well_formed(j, d) for j, d in zip(live, detect_many(self.detector, [j.image for j in live]))]
        tracks = self._track_many(live, dets)
        tracked = {id(j): (d, t) for j, d, t in zip(live, dets, tracks)}
        return [Outputs(duplicate=True) if j is None
                else self._outputs(f, self._finish(j, *tracked.get(id(j), (None, None))))
                for f, j in zip(frames, jobs)]

    def _outputs(self, frame: m.Frame, tf: m.TrackedFrame | None) -> Outputs:
        """What :meth:`process` made of ``frame`` (``None``: a redelivery) as the stage's outputs."""
        if tf is None:
            return Outputs(duplicate=True)
        cam = frame.camera_id
        return Outputs(publish=[Publish(topics.TRACKS, cam, tf)]
                       + [Publish(topics.PERSON_CROPS, cam, c) for c in self.last_crops]
                       + [Publish(topics.CAMERA_SNAPSHOTS, cam, s) for s in self.snapshots.pop()],
                       info={"errors": dict(self.last_errors)} if self.last_errors else {})

    def process(self, frame: m.Frame) -> m.TrackedFrame | None:
        """Track one frame; ``None`` for a frame already processed (redelivery)."""
        job = self._prepare(frame)
        if job is None:
            return None
        if job.image is None:  # end of stream
            return self._finish(job)
        dets = self._well_formed(job, self.detector.detect(job.image))
        return self._finish(job, dets, self._timed_tracker(frame).update(job.image, dets))

    def _prepare(self, frame: m.Frame) -> _Job | None:
        """The checks and the decoding of a frame (JPEG or raw pixels), changing nothing; ``None`` for a redelivery.

        Raises :class:`UnknownCamera` or :class:`~storelens.errors.DecodeError` (a dead letter).
        """
        if frame.camera_id not in self.cameras:
            raise UnknownCamera(f"unknown camera {frame.camera_id!r}")
        if not frame.end_of_stream:
            if frame.seq <= self.last_seq.get(frame.camera_id, -1):
                return None
        out = m.TrackedFrame(camera_id=frame.camera_id, seq=frame.seq, ts_ms=frame.ts_ms,
                             source_frame=frame.source_frame, end_of_stream=frame.end_of_stream,
                             image_digest=frame.image_digest,
                             width=frame.source_width or frame.width, height=frame.source_height or frame.height)
        image = None if frame.end_of_stream else decode_frame(frame)
        if image is not None:  # a JPEG frame without a size header: its boxes are in the decoded image's pixels
            out.width = out.width or image.shape[1]
            out.height = out.height or image.shape[0]
        return _Job(frame, out, image)

    def _track_many(self, jobs: list[_Job], dets: list[Detections]) -> list[Tracks]:
        """Each job's camera tracker updated with its detections; one re-id inference for all when they share it."""
        trackers = [self._timed_tracker(j.frame) for j in jobs]
        embedder = shared_embedder(trackers)
        if embedder is None:
            return [t.update(j.image, d) for t, j, d in zip(trackers, jobs, dets)]
        plans = [t.plan_appearance(d) for t, d in zip(trackers, dets)]  # (features known, detections to embed)
        fresh = embedder.embed_many([(j.image, d.bbox_xyxy[todo]) for j, d, (_, todo) in zip(jobs, dets, plans)])
        out = []
        for t, d, (feats, todo), f in zip(trackers, dets, plans, fresh):
            if todo:
                feats[todo] = f
            out.append(t.update_with_features(d, feats, todo))
        return out

    def _finish(self, job: _Job, dets: Detections | None = None, tracks: Tracks | None = None) -> m.TrackedFrame:
        """Everything after tracking: ids, source-pixel boxes, stationary flags, appearance, crops, snapshots."""
        frame, out, image = job.frame, job.out, job.image
        self.last_errors = {BAD_BOX: job.bad_boxes} if job.bad_boxes else {}
        if image is None:
            self._end_stream(frame.camera_id, frame.seq)
            self.last_crops = [m.PersonCrop(camera_id=frame.camera_id, seq=frame.seq, ts_ms=frame.ts_ms,
                                            end_of_stream=True)]
            return out
        self.last_seq[frame.camera_id] = frame.seq
        base = self.id_base.setdefault(frame.camera_id, track_id_base(frame.ts_ms))
        if base:
            tracks = replace(tracks, track_id=tracks.track_id + base)
        sx = out.width / image.shape[1]
        sy = out.height / image.shape[0]
        boxes = tracks.bbox_xyxy * np.array([sx, sy, sx, sy], np.float32)
        still = self.stationary(frame.camera_id).update(frame.ts_ms, tracks.track_id, boxes)
        for tid, (x1, y1, x2, y2), conf, cls, st in zip(tracks.track_id, boxes, tracks.confidence, tracks.class_id,
                                                        still):
            out.tracks.add(track_id=int(tid), bbox_xyxy=m.BoxXYXY(x1=x1, y1=y1, x2=x2, y2=y2),
                           confidence=float(conf), class_id=int(cls), stationary=bool(st))
        appearance = getattr(tracks, "appearance", None)  # per-track embeddings, when the tracker has them
        if appearance is not None:
            for t, emb in zip(out.tracks, appearance):
                t.appearance.extend(emb.tolist())
        if self.uniform is not None:  # judged on the decoded image's pixels
            self.uniform.mark(frame.camera_id, frame.seq, image, tracks.track_id, tracks.bbox_xyxy, out.tracks)
        self.last_crops = self._crops(frame, image, tracks, boxes, (sx, sy))
        self.snapshots.offer(frame, image, np.vstack([dets.bbox_xyxy, tracks.bbox_xyxy]))
        return out

    def _end_stream(self, camera_id: str, seq: int) -> None:
        """The camera's stream ended (a file's end): its tracks end with it, as analytics and the faces stages
        close them there. A next stream of the camera (a file camera re-pointed by a site version) starts a new
        tracker session whose ids follow this one's: no person of the new stream takes an id of the old one
        (before, the old tracks went on by position and appearance into the new stream, under ids whose journeys
        and visits were already closed). A redelivered marker changes nothing."""
        if camera_id not in self._trackers or seq <= self.last_seq.get(camera_id, -1):
            return
        self._new_session(camera_id)

    def _new_session(self, camera_id: str, same_view: bool = False) -> None:
        """The camera's tracker session ends: its tracker (made again at its next frame) and the tables of the
        session's tracks go, and the next session's ids follow this one's (the ended session's ids are below its
        base + :data:`TRACK_ID_SESSION_FACTOR`). Unless ``same_view`` (a break in the same stream), the camera's
        stationary filter and reference frame go too (an end of stream: a re-pointed camera's new view; a state
        that did not restore); on a break the snapshotter still takes a new reference frame if the size changed."""
        for table in (self._trackers, self._rates, self._crop_seq):
            table.pop(camera_id, None)
        if not same_view:
            self._stationary.pop(camera_id, None)
            self.snapshots.forget(camera_id)  # its next frame is its reference frame (a re-pointed camera's new view)
        if camera_id in self.id_base:
            self.id_base[camera_id] += TRACK_ID_SESSION_FACTOR

    def forget_camera(self, camera_id: str) -> None:
        """Drop everything of the camera (a site version removed it, or its partition went to another replica):
        its next frame starts a tracker session whose ids' base is that frame's time (:func:`track_id_base`)."""
        for table in (self._trackers, self._rates, self.last_seq, self.id_base, self._stationary, self._crop_seq):
            table.pop(camera_id, None)
        self.snapshots.forget(camera_id)

    def _crops(self, frame: m.Frame, image: np.ndarray, tracks, boxes_src: np.ndarray,
               scale: tuple[float, float]) -> list[m.PersonCrop]:
        """At most one crop per track every ``crops.every_n_frames`` of its frames. A crop's box is the region its
        image shows, in source pixels (``scale``: source pixels per image pixel): the track's box clipped to the
        frame, so a face found in the image maps back to where it is (a box past the frame's edge would shift
        and stretch it)."""
        cfg = self.crops_cfg
        if not cfg.every_n_frames:
            return []
        import cv2

        # a track's last crop matters for every_n_frames only: older entries (ended tracks) go, so the table
        # (and the camera's snapshot) holds the recent tracks, not every track the camera ever had
        last = {t: s for t, s in self._crop_seq.get(frame.camera_id, {}).items() if frame.seq - s < cfg.every_n_frames}
        self._crop_seq[frame.camera_id] = last
        out = []
        for tid, box, src in zip(tracks.track_id, tracks.bbox_xyxy, boxes_src):
            if int(tid) in last:
                continue
            if src[3] - src[1] < cfg.min_height_px:
                continue
            x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
            x2, y2 = min(image.shape[1], int(np.ceil(box[2]))), min(image.shape[0], int(np.ceil(box[3])))
            if x2 <= x1 or y2 <= y1:
                continue
            ok, buf = cv2.imencode(".jpg", image[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
            for q in (q for q in SHRINK_QUALITIES if q < cfg.jpeg_quality):  # so it fits person-crops' limit
                if not ok or len(buf) <= CROP_MAX_JPEG_BYTES:
                    break
                ok, buf = cv2.imencode(".jpg", image[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                continue
            last[int(tid)] = frame.seq
            sx, sy = scale
            out.append(m.PersonCrop(camera_id=frame.camera_id, seq=frame.seq, ts_ms=frame.ts_ms, track_id=int(tid),
                                    bbox_xyxy=m.BoxXYXY(x1=x1 * sx, y1=y1 * sy, x2=x2 * sx, y2=y2 * sy),
                                    jpeg=buf.tobytes()))
        return out


#: A crop's JPEG larger than this is encoded again at a lower quality (``SHRINK_QUALITIES``): its ``PersonCrop`` must
#: fit the ``person-crops`` topic (2 MiB; what the runner still finds too large is dead-lettered ``too_large``).
CROP_MAX_JPEG_BYTES = topics.spec(topics.PERSON_CROPS).max_message_bytes * 15 // 16


def build_detect_track(config: SiteConfig, detector: Detector | None = None,
                       tracker_factory: Callable[[], Tracker] | None = None,
                       stage: DetectTrackStage | None = None) -> DetectTrackStage:
    """The detect-track stage with the site's detector and tracker (or the ones given, or ``stage`` itself)."""
    if stage is not None:
        return stage
    from storelens.backends.detectors import build_detector
    from storelens.backends.trackers import tracker_factory as make_trackers

    # bytereid: every camera's tracker shares one re-id model (one inference serves a batch of cameras). When the
    # detector is compiled here, the first tracker is built in a thread meanwhile; not beside Ultralytics' own
    # detector, which must import ultralytics first (it sets OMP_NUM_THREADS and the log stream before)
    prebuild = detector is None and config.detector.backend != "ultralytics"
    trackers = tracker_factory or make_trackers(config.tracker, prebuild=prebuild)
    return DetectTrackStage(config, detector or build_detector(config.detector), trackers)
