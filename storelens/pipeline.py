"""The embedded mode: every stage in one process, joined by the in-process bus.

Stages exchange protobuf bytes exactly as they do over Kafka (same topics,
same keys, same codec), so the embedded run exercises the distributed code
path. One ingest thread per camera, one detect-track worker, one analytics
worker; the bus queues are bounded, so ingest never runs far ahead.

Example:
    >>> from storelens.config import load_config                      # doctest: +SKIP
    >>> result = EmbeddedPipeline(load_config("site.yaml")).run()     # doctest: +SKIP
    >>> result.line_counts["entrance"]                                 # doctest: +SKIP
    {'door': {'in': 4, 'out': 2}}
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from storelens import messages as m
from storelens import topics
from storelens.bus import InProcessBus
from storelens.config import SiteConfig
from storelens.errors import DecodeError, StoreLensError
from storelens.ingest import camera_frames, is_live, open_capture
from storelens.stages import AnalyticsStage, DetectTrackStage, dead_letter

log = logging.getLogger(__name__)

_STOP = b"__stop__"


@dataclass
class PipelineResult:
    frames: int = 0
    frames_per_camera: dict[str, int] = field(default_factory=dict)
    line_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    occupancy: dict[str, int] = field(default_factory=dict)
    crossings: int = 0
    dead_letters: int = 0
    elapsed_s: float = 0.0
    #: Faces stages (``faces.enabled``): counters of the attributes and reid stages.
    faces: dict[str, int] = field(default_factory=dict)
    #: Track -> customer decisions of the reid stage, in order.
    customer_matches: list[m.CustomerMatch] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


def check_sources(config: SiteConfig) -> None:
    """Fail fast, before loading models, if a file source cannot be opened."""
    for cam in config.cameras:
        if not is_live(cam.source):
            open_capture(cam.source).release()


class EmbeddedPipeline:
    """Runs ingest -> detect-track -> analytics (-> storage) for every camera."""

    def __init__(
        self,
        config: SiteConfig,
        storage=None,
        detector=None,
        tracker_factory: Callable | None = None,
        on_tracked: Callable[[m.TrackedFrame], None] | None = None,
        on_frame_done: Callable[[str], None] | None = None,
        bus: InProcessBus | None = None,
        faces_stages: tuple | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.bus = bus or InProcessBus(maxsize=8)
        self.on_tracked = on_tracked
        self.on_frame_done = on_frame_done
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._detector = detector
        self._tracker_factory = tracker_factory
        self.result = PipelineResult()
        self.analytics = AnalyticsStage(config)
        #: ``(AttributesStage, ReidStage)`` when ``faces.enabled`` (built in :meth:`run` unless given).
        self.faces_stages = faces_stages

    def stop(self) -> None:
        self._stop.set()

    # -- stage loops -----------------------------------------------------
    def _ingest(self, cam) -> None:
        key = topics.camera_key(cam.id)
        try:
            for frame in camera_frames(cam, should_stop=self._stop.is_set):
                self.bus.publish(topics.FRAMES, key, m.encode(frame))
        except StoreLensError as exc:
            self._fail(exc)

    def _detect_track(self, stage: DetectTrackStage, n_cameras: int) -> None:
        sub = self.bus.subscribe(topics.FRAMES)
        self._ready.release()
        ended = 0
        while ended < n_cameras:
            msg = sub.poll(timeout_s=0.2)
            if msg is None:
                if self._stop.is_set():
                    break
                continue
            if msg.value == _STOP:
                break
            try:
                frame = m.decode(m.Frame, msg.value)
                tf = stage.process(frame)
            except DecodeError as exc:
                self._dead_letter(msg, str(exc), "detect-track")
                continue
            except BaseException as exc:  # a model failure stops the run with its message
                self._fail(exc)
                break
            if tf is not None:
                self.bus.publish(topics.TRACKS, msg.key, m.encode(tf))
                for crop in stage.last_crops:
                    self.bus.publish(topics.PERSON_CROPS, msg.key, m.encode(crop))
            if frame.end_of_stream:
                ended += 1
        self.bus.publish(topics.TRACKS, b"", _STOP)
        self.bus.publish(topics.PERSON_CROPS, b"", _STOP)

    def _faces(self) -> None:
        """person-crops -> face-observations, track-attributes (attributes) and customer-matches (reid).

        One face detection per crop serves both stages (the services each run their own).
        """
        from storelens.faces.stages import decode_crop

        sub = self.bus.subscribe(topics.PERSON_CROPS)
        self._ready.release()
        attributes, reid = self.faces_stages
        res = self.result
        while True:
            msg = sub.poll(timeout_s=0.2)
            if msg is None:
                continue
            if msg.value == _STOP:
                break
            try:
                crop = m.decode(m.PersonCrop, msg.value)
                image = face = None
                if not crop.end_of_stream:
                    image = decode_crop(crop)
                    face = attributes.finder.find(image)
                out = attributes.process(crop, image, face)
                accepted = next((o.accepted for o in out.observations), None)
                matches = reid.process(crop, image, face, accepted) if reid is not None else []
            except DecodeError as exc:
                self._dead_letter(msg, str(exc), "faces")
                continue
            except BaseException as exc:  # a model failure stops the run with its message
                self._fail(exc)
                break
            for obs in out.observations:
                self.bus.publish(topics.FACE_OBSERVATIONS, msg.key, m.encode(obs))
            for summary in out.summaries:
                self.bus.publish(topics.TRACK_ATTRIBUTES, msg.key, m.encode(summary))
            for match in matches:
                self.bus.publish(topics.CUSTOMER_MATCHES, msg.key, m.encode(match))
                res.customer_matches.append(match)
            if self.storage is not None:
                if out.summaries:
                    self.storage.write_track_attributes(out.summaries)
                if matches:
                    self.storage.write_customer_matches(matches)

    def _analytics(self) -> None:
        sub = self.bus.subscribe(topics.TRACKS)
        self._ready.release()
        res = self.result
        while True:
            msg = sub.poll(timeout_s=0.2)
            if msg is None:
                continue
            if msg.value == _STOP:
                break
            try:
                tf = m.decode(m.TrackedFrame, msg.value)
                out = self.analytics.process(tf)
            except DecodeError as exc:
                self._dead_letter(msg, str(exc), "analytics")
                continue
            if tf.end_of_stream:
                continue
            if self.storage is not None:
                self.storage.write_tracked_frame(tf)
                if out.crossings:
                    self.storage.write_crossings(out.crossings)
                if out.occupancy is not None:
                    self.storage.write_occupancy(out.occupancy)
                for w in out.windows:
                    self.storage.write_count_window(w)
            for ev in out.crossings:
                self.bus.publish(topics.CROSSINGS, msg.key, m.encode(ev.to_proto()))
            if out.occupancy is not None:
                self.bus.publish(topics.OCCUPANCY, msg.key, m.encode(out.occupancy))
            for w in out.windows:
                self.bus.publish(topics.COUNTS, msg.key, m.encode(w))
            res.frames += 1
            res.frames_per_camera[tf.camera_id] = res.frames_per_camera.get(tf.camera_id, 0) + 1
            res.crossings += len(out.crossings)
            if self.on_tracked is not None:
                self.on_tracked(tf)
            if self.on_frame_done is not None:
                self.on_frame_done(tf.camera_id)

    def _dead_letter(self, msg, reason: str, service: str) -> None:
        log.warning("dead letter", extra={"topic": msg.topic, "reason": reason, "service": service})
        self.result.dead_letters += 1
        self.bus.publish(topics.DEAD_LETTER, msg.key, m.encode(dead_letter(msg.topic, msg.key, msg.value, reason, service)))

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self._stop.set()

    # -- run -------------------------------------------------------------
    def build_faces_stages(self) -> tuple:
        """``(AttributesStage, ReidStage)`` from ``config.faces`` (loads the face models and the gallery)."""
        from storelens.faces.stages import AttributesStage, ReidStage, open_gallery

        return AttributesStage(self.config), ReidStage(self.config, open_gallery(self.config))

    def build_stage(self) -> DetectTrackStage:
        from storelens.detection import build_detector
        from storelens.tracking import build_tracker

        detector = self._detector or build_detector(self.config.detector)
        factory = self._tracker_factory or (lambda: build_tracker(self.config.tracker))
        return DetectTrackStage(self.config, detector, factory)

    def run(self, stage: DetectTrackStage | None = None) -> PipelineResult:
        """Run until every file source has ended (or :meth:`stop`); raise the first stage error."""
        check_sources(self.config)
        stage = stage or self.build_stage()
        for cam in self.config.cameras:  # build trackers (and their embedders) before timing
            stage.tracker(cam.id)
        if self.faces_stages is None and self.config.faces.enabled:
            self.faces_stages = self.build_faces_stages()
        self._ready = threading.Semaphore(0)
        t0 = time.perf_counter()
        workers = [
            threading.Thread(target=self._detect_track, args=(stage, len(self.config.cameras)), name="detect-track", daemon=True),
            threading.Thread(target=self._analytics, name="analytics", daemon=True),
        ]
        if self.faces_stages is not None:
            workers.append(threading.Thread(target=self._faces, name="faces", daemon=True))
        for w in workers:
            w.start()
        for _ in workers:  # subscriptions exist before the first frame is published
            self._ready.acquire()
        ingest = [threading.Thread(target=self._ingest, args=(c,), name=f"ingest-{c.id}", daemon=True)
                  for c in self.config.cameras]
        for t in ingest:
            t.start()
        try:
            while any(w.is_alive() for w in workers):
                if self._errors:
                    self.bus.publish(topics.FRAMES, b"", _STOP)
                    break
                for w in workers:
                    w.join(timeout=0.1)
        except KeyboardInterrupt:
            self.stop()
            self.bus.publish(topics.FRAMES, b"", _STOP)
        for w in workers:
            w.join(timeout=30)
        self.result.elapsed_s = time.perf_counter() - t0
        for cam in self.config.cameras:
            self.result.line_counts[cam.id] = self.analytics.line_counts(cam.id)
            self.result.occupancy[cam.id] = self.analytics.occupancy[cam.id].value
        if self.faces_stages is not None:
            attributes, reid = self.faces_stages
            self.result.faces = {f"attributes_{k}": v for k, v in attributes.stats.items()}
            if reid is not None:
                self.result.faces.update({f"reid_{k}": v for k, v in reid.stats.items()})
        if self._errors:
            err = self._errors[0]
            if isinstance(err, StoreLensError):
                raise err
            raise StoreLensError(f"pipeline failed: {type(err).__name__}: {err}") from err
        return self.result
