"""The services on Kafka: ingest, and any registered stage (detect-track, attributes, reid) under the runner.

:class:`StageWorker` is a stage as a service: the :class:`~storelens.runtime.runner.Runner`
with a :class:`~storelens.runtime.transports.KafkaTransport`, plus health, readiness and
metrics. Stage-specific behaviour is added by hooks and observers, not by new loops:

* detect-track recovers *exactly* (:class:`SnapshotHooks`): its per-camera tracker
  state is written to the compacted ``detect-track-state`` topic together with the
  input offset it reflects, and consumer offsets are committed only right after such
  a snapshot. After a crash the service restores the snapshot, skips input it already
  reflects and re-processes the rest, which reproduces the same TrackedFrames (same
  seq); downstream sinks skip or upsert them. So a SIGKILL mid-stream changes nothing
  in the final counts.
* attributes and reid are at-least-once: an input offset is committed only after the
  outputs of the crops before it were flushed to the broker, and every sink upserts
  (``track-attributes`` by camera and track, ``customer-matches`` by a deterministic
  event id). Their per-track state (face aggregates, embeddings awaiting a decision)
  is in memory only: after a restart a track that was in progress continues with the
  evidence of the redelivered and new crops only. reid reads ``customer-erasures``
  with a consumer group of its own and serves them before the next crop.
* site versions saved through ``/v1/site``: ingest, detect-track, attributes and reid read the
  compacted ``site-config`` topic from its beginning at every start, without a consumer group
  (:class:`~storelens.runtime.kafka.TopicTail`: every replica sees every version, nothing is
  committed, detect-track's snapshots and offsets are not touched). The newest version of
  ``store.id`` is in force before the first frame or crop; later ones are served before the
  next frame or crop. Ingest starts, stops and restarts cameras (:class:`CameraSupervisor`).

The analytics service runs the same runner core inside faust (:mod:`storelens.runtime.analytics_app`).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

from storelens.config import SiteConfig
from storelens.config.site import site_file_override
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import ConfigError, StoreLensError, WaitStopped
from storelens.runtime.ingest import CameraSupervisor, StreamStart
from storelens.runtime.runner import Handled, Runner, RunnerCore
from storelens.runtime.service import ServiceRuntime
from storelens.runtime.transports import ConsumerGroup, KafkaTransport

log = logging.getLogger(__name__)

#: Seconds between two broker pings (and store pings) of the readiness checks.
PING_EVERY_S = 10.0
#: Seconds between two updates of the consumer lag gauges.
LAG_EVERY_S = 5.0
#: Seconds a live camera may go without publishing a frame (counted from its start) before it is down: ingest's
#: "cameras" readiness check fails and one outage is counted (``storelens_camera_outages_total{camera}``). A camera
#: sampled slower than a frame every 10 s gets three of its frame intervals instead.
CAMERA_FRAME_TIMEOUT_S = 30.0


def newest_site_update(msgs: Sequence[Any], store_id: str) -> m.SiteUpdate | None:
    """The newest ``SiteUpdate`` of ``store_id`` among ``site-config`` messages (key: the store id)."""
    newest = None
    for msg in msgs:
        if msg.key.decode("utf-8", "replace") != store_id or not msg.value:
            continue
        try:
            update = m.decode(m.SiteUpdate, msg.value)
        except StoreLensError as exc:
            log.warning("undecodable site version skipped", extra={"offset": msg.offset, "error": str(exc)})
            continue
        if newest is None or update.version > newest.version:
            newest = update
    return newest


def site_tail(config: SiteConfig, stage: Any = None) -> tuple[Any, m.SiteUpdate | None]:
    """A :class:`~storelens.runtime.kafka.TopicTail` of ``site-config`` read to its end, and the newest version
    of ``store.id`` in it (``None``: none). That version is applied to ``stage`` now (before any partition is
    assigned, so a restored snapshot finds an API-added camera); the later ones come through the stage's
    runner (``tails=`` of :class:`StageWorker`). A warning says when that version's cameras or alert rules differ
    from the site file's (:func:`~storelens.config.site.site_file_override`): the file's are not in force."""
    from storelens.runtime.kafka import TopicTail

    tail = TopicTail(config.kafka, topics.topic_name(topics.SITE_CONFIG, config.kafka.topic_prefix))
    newest = newest_site_update(tail.read_to_end(), config.store.id)
    if newest is not None and (override := site_file_override(config, newest)):
        log.warning(override, extra={"site_version": newest.version})
    if newest is not None and stage is not None:
        try:
            stage.handle(topics.SITE_CONFIG, newest)  # nothing is open yet: no outputs
        except StoreLensError as exc:
            log.error("site version not applied", extra={"version": newest.version, "error": str(exc)})
    return tail, newest


def _site_cameras(config: SiteConfig, update: m.SiteUpdate):
    """The cameras of a site version; ``None`` (logged) when it is invalid."""

    from storelens.config import with_site_update

    try:
        return with_site_update(config, update).cameras
    except (StoreLensError, ValueError) as exc:
        log.error("site version not applied to ingest", extra={"version": update.version, "error": str(exc)})
        return None


class BrokerProbe:
    """A service's "broker" readiness check: the broker answered the last ping, the service's client is
    connected (a consumer: assigned, see :attr:`~storelens.runtime.kafka.KafkaConsumer.connected`), and no flush or
    publish is waiting for the broker (a restart: not ready, though alive, the heartbeat goes on).

    The pings run every :data:`PING_EVERY_S` in a thread of their own while the probe is entered (``with``): the
    service's thread can be held for long in a call to the broker while it is away (a flush, a publish waiting
    for metadata), and /readyz must say so meanwhile.
    """

    def __init__(self, bus, rt: ServiceRuntime, ok: bool = True, connected: Callable[[], bool] = lambda: True) -> None:
        self.bus, self.ok, self._connected = bus, ok, connected
        self._done = threading.Event()
        rt.add_check("broker", self.ready)

    def ready(self) -> bool:
        return self.ok and self._connected() and self.bus.waiting_since is None

    def _ping(self) -> None:
        while not self._done.wait(PING_EVERY_S):
            self.ok = self.bus.ping()

    def __enter__(self) -> "BrokerProbe":
        threading.Thread(target=self._ping, name="storelens-broker-ping", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()


def frame_timeout_s(cam) -> float:
    """How long the live camera ``cam`` may go without a frame: :data:`CAMERA_FRAME_TIMEOUT_S`, or three of its
    frame intervals (``target_fps``) when longer."""
    return max(CAMERA_FRAME_TIMEOUT_S, 3.0 / cam.target_fps if cam.target_fps else 0.0)


class CameraProbe:
    """Ingest's "cameras" readiness check and camera outage counter.

    Ready when every camera in force has its thread running and, if live, published a frame within
    :func:`frame_timeout_s` (from its (re)start on); a file camera whose thread has ended without failing (its
    file ended) is fine, one that failed is not. Not ready answers which camera and why (``details``).
    :meth:`update` (the ingest loop, every turn) counts each outage of a live camera once, when it starts, in
    ``storelens_camera_outages_total{camera}``: its source is missing or gives nothing (the camera thread
    reconnects with backoff meanwhile) or its frames cannot be published (the broker is away). Each reopen of
    a live camera's source (every open after a failed one or a dropped stream: many per outage) is counted in
    ``storelens_camera_reopen_attempts_total{camera}`` (:meth:`reopening`, the supervisor's ``on_reopen``).
    """

    def __init__(self, sup: CameraSupervisor, rt: ServiceRuntime) -> None:
        from prometheus_client import Counter

        self.sup = sup
        self.outages = Counter("storelens_camera_outages_total", "Outages of live cameras: no frame published for "
                               "the camera's frame timeout (30 s by default), counted when one starts", ["camera"],
                               registry=rt.registry)
        self.reopens = Counter("storelens_camera_reopen_attempts_total", "Reopens of live cameras' sources (after "
                               "a failed open or a dropped stream, with backoff: many per outage)", ["camera"],
                               registry=rt.registry)
        self._lock = threading.Lock()
        #: per camera thread (a restart is a new one): when it was first seen, its last frame, its failure
        self._since: dict[threading.Thread, float] = {}
        self._last: dict[threading.Thread, float] = {}
        self._failed: dict[threading.Thread, str] = {}
        #: live camera threads in an outage -> their camera id
        self._down: dict[threading.Thread, str] = {}
        #: camera threads whose last frame was skipped, too large for the topic -> why
        self._too_large: dict[threading.Thread, str] = {}
        rt.add_check("cameras", self.ready)

    def published(self) -> None:
        """A frame was published (called on the camera's thread)."""
        with self._lock:
            self._last[threading.current_thread()] = time.monotonic()
            self._too_large.pop(threading.current_thread(), None)

    def too_large(self, why: str) -> None:
        """A frame was skipped, too large for the topic (called on the camera's thread): the camera is not ready
        until one is published."""
        with self._lock:
            self._too_large[threading.current_thread()] = why

    def reopening(self, cam) -> None:
        """The live camera ``cam``'s source is about to be reopened (called on the camera's thread)."""
        self.reopens.labels(cam.id).inc()

    def failed(self, exc: Exception) -> None:
        """The camera failed (called on the camera's thread, which then ends)."""
        with self._lock:
            self._failed[threading.current_thread()] = str(exc)

    def _problems(self) -> dict[str, tuple[threading.Thread, str, bool]]:
        """camera id -> (thread, why it is not fine, whether it is a live camera without frames)."""
        from storelens.backends.video import is_live

        # (read before taking our lock: apply() joins camera threads, which call published(), holding the
        # supervisor's lock)
        cameras, threads, out = self.sup.cameras, self.sup.threads(), {}
        now = time.monotonic()
        with self._lock:
            for stale in set(self._since) - set(threads.values()):  # stopped, removed or restarted cameras
                for d in (self._since, self._last, self._failed, self._too_large):
                    d.pop(stale, None)
                self._down.pop(stale, None)
            for cam in cameras:
                t = threads.get(cam.id)
                if t is None:
                    continue
                since = self._since.setdefault(t, now)
                if t in self._failed:
                    out[cam.id] = (t, f"failed: {self._failed[t]}", False)
                elif t in self._too_large:
                    out[cam.id] = (t, self._too_large[t], False)
                elif not is_live(cam.source):
                    continue  # a file: running, or ended
                elif not t.is_alive():
                    out[cam.id] = (t, "stopped", False)
                elif (age := now - self._last.get(t, since)) > frame_timeout_s(cam):
                    out[cam.id] = (t, f"no frame published for {age:.0f} s (limit {frame_timeout_s(cam):.0f} s)", True)
        return out

    def ready(self) -> tuple[bool, dict[str, str]]:
        problems = self._problems()
        return not problems, {cid: why for cid, (_t, why, _down) in problems.items()}

    def update(self) -> None:
        """Count the outages that started since the last call; log those that ended."""
        problems = self._problems()
        down = {t: (cid, why) for cid, (t, why, no_frames) in problems.items() if no_frames}
        with self._lock:
            for t, (cid, why) in down.items():
                if t not in self._down:
                    self._down[t] = cid
                    self.outages.labels(cid).inc()
                    log.error("camera down", extra={"camera": cid, "reason": why})
            for t in set(self._down) - set(down):
                if (cid := self._down.pop(t)) not in problems:
                    log.info("camera back", extra={"camera": cid})


def _count_delivery_errors(bus, rt: ServiceRuntime) -> None:
    """Export ``bus``'s failed deliveries as ``storelens_delivery_errors_total{topic}``."""
    bus.on_delivery_error = lambda topic: rt.metrics.delivery_errors.labels(topic).inc()


def ingest_streams(config: SiteConfig, rt: ServiceRuntime | None = None) -> dict[str, StreamStart]:
    """Camera id -> the :class:`~storelens.runtime.ingest.StreamStart` of its stream a former ingest process
    started last (the compacted ``ingest-state`` topic read to its end). An undecodable record is logged and
    counted (``storelens_errors_total{reason="decode"}``) and left out: that camera's next stream is numbered
    from 0 (its file) or from the wall clock (a new stream)."""
    from storelens.runtime.kafka import read_to_end

    out: dict[str, StreamStart] = {}
    for key, value, offset in read_to_end(config.kafka, topics.topic_name(topics.INGEST_STATE,
                                                                         config.kafka.topic_prefix)):
        if not value:
            continue
        try:
            s = m.decode(m.IngestStream, value)
        except StoreLensError as exc:
            log.warning("undecodable ingest state skipped", extra={"offset": offset, "error": str(exc)})
            if rt is not None:
                rt.metrics.errors.labels("decode").inc()
            continue
        position = (int(s.position_seq), int(s.position_source_frame)) if s.position_seq else None
        out[s.camera_id or key.decode("utf-8", "replace")] = StreamStart(
            s.stream_id, int(s.first_seq), int(s.after_source_frame), s.ended, s.target_fps, position)
    return out


def topic_limit(kafka_cfg, base: str) -> int:
    """``max.message.bytes`` of the deployment's topic ``base``: the declared one
    (:attr:`~storelens.contract.topics.TopicSpec.max_message_bytes`), or the broker's setting of the topic when lower
    (a topic created by hand or with older settings; the declared one when the broker does not say)."""
    return topic_limits(kafka_cfg, [base])[base]


def topic_limits(kafka_cfg, bases: Sequence[str]) -> dict[str, int]:
    """:func:`topic_limit` of each declared topic of ``bases`` (by base name; one request to the broker)."""
    from storelens.runtime.kafka import BrokerError, KafkaAdmin

    declared = {b: s.max_message_bytes for b in bases if (s := topics.spec(b)) is not None}
    names = {topics.topic_name(b, kafka_cfg.topic_prefix): b for b in declared}
    out = dict(declared)
    if not names:
        return out
    admin = KafkaAdmin(kafka_cfg, 10.0)
    try:
        configs = admin.topic_configs(list(names))
        for name, base in names.items():
            setting = configs.get(name, {}).get("max.message.bytes")
            if setting is not None and setting.value:
                out[base] = min(declared[base], int(setting.value))
    except (BrokerError, ValueError) as exc:
        log.warning("cannot read the topics' max.message.bytes; the declared ones are used",
                    extra={"topics": ",".join(names), "error": str(exc)})
    finally:
        admin.close()
    return out


#: Seconds one attempt of ingest to keep a stream's start waits for the broker: a stopped camera's attempts end
#: well within :data:`~storelens.runtime.ingest.STOP_JOIN_S`, so no stale start lands after its replacement's.
KEEP_STREAM_TRY_S = 10.0

#: Seconds one offer of a frame to the producer waits while the broker is away, before it is offered again: a camera
#: stopped meanwhile (re-pointed, removed) gives up within it, well within
#: :data:`~storelens.runtime.ingest.STOP_JOIN_S`, so its last frame cannot land after its new stream's first ones.
FRAME_TRY_S = 5.0

#: Seconds between the warnings of a frame offered again and again while the broker is away.
FRAME_WAIT_LOG_S = 240.0


def offer_frame(publish_once: Callable[[float], None], stopped: Callable[[], bool], camera: str) -> bool:
    """``publish_once(timeout_s)`` (:meth:`KafkaBus.publish` of one frame) until the producer takes it; ``False``
    (not published) once ``stopped()`` (the camera's stream or the process stopping) after an attempt it did not
    take. Logged when it starts waiting and every :data:`FRAME_WAIT_LOG_S`."""
    from storelens.runtime.kafka import UndeliveredError

    since = logged = None
    while True:
        try:
            publish_once(FRAME_TRY_S)
            return True
        except UndeliveredError as exc:
            if stopped():  # not published; the camera stops
                return False
            now = time.monotonic()
            since = now if since is None else since
            if logged is None or now - logged >= FRAME_WAIT_LOG_S:
                logged = now
                log.warning("frame not taken yet, offered again", extra={
                    "camera": camera, "error": str(exc), "waited_s": round(now - since)})


class FrameDeliveries:
    """``delivered`` of :class:`~storelens.runtime.ingest.CameraSupervisor` on a :class:`KafkaBus`: the delivery
    of the last frame (or marker) each camera handed to the producer (:meth:`sent`), waited for."""

    def __init__(self, bus) -> None:
        self.bus = bus
        self._last: dict[bytes, Any] = {}  # camera key -> delivery future of its last message the producer took

    def sent(self, key: bytes, delivery: Any) -> None:
        self._last[key] = delivery

    def __call__(self, cam, stopped: Callable[[], bool]) -> bool:
        """Whether the camera's messages handed to the producer so far were delivered (its last one was: a camera's
        messages go to one partition, in order), waiting while the broker is away until ``stopped()``, and at
        least :data:`FRAME_TRY_S` (a stop's last position)."""
        delivery = self._last.get(topics.camera_key(cam.id))
        start = time.monotonic()
        while delivery is not None:
            got = self.bus.delivered(delivery, 1.0)
            if got is not None:
                return got
            if stopped() and time.monotonic() - start >= FRAME_TRY_S:
                return False
        return True


class FrameFitter:
    """Ingest's frames as they fit the ``frames`` topic (``limit``: its ``max.message.bytes``).

    A frame over it (a camera of many pixels at a high ``jpeg_quality`` without ``resize_width``) would be refused
    by the broker. It is encoded again at a lower JPEG quality (:func:`~storelens.backends.video.reencode_jpeg`,
    same size; only qualities below the camera's own ``jpeg_quality``, ``quality_of(key)``), counted in
    ``storelens_errors_total{reason="too_large_reencoded"}`` and logged when the quality used changes; when no
    quality fits it is skipped, counted in ``errors{reason="too_large"}`` and logged at the first one of a run.

    The quality that fitted is tried first for the camera's next frame over the limit; the best one again once a
    frame fits as it is (a busy moment is over) or after :attr:`retry_best_after` frames at a lower one (before, one
    busy frame left the camera at quality 30 until ingest restarted).
    """

    #: Frames over the limit encoded at a quality below the best one, after which the next tries the best again.
    retry_best_after = 25

    def __init__(self, limit: int, errors: Any, headers: Sequence[tuple[str, bytes]],
                 quality_of: Callable[[bytes], int | None] = lambda key: None) -> None:
        self.limit, self.errors, self.headers, self.quality_of = limit, errors, headers, quality_of
        self._quality: dict[bytes, int] = {}  # camera key -> the quality that fitted last (frames over the limit)
        self._since: dict[bytes, int] = {}  # camera key -> frames encoded at it since it was found
        self._logged: dict[bytes, int] = {}  # camera key -> the quality logged last
        self._failing: set[bytes] = set()  # cameras whose last frame was skipped

    def __call__(self, key: bytes, value: bytes) -> tuple[bytes | None, str]:
        """``(value to publish, "")``, or ``(None, why)`` when the frame is skipped."""
        from storelens.backends.video import SHRINK_QUALITIES, reencode_jpeg

        if topics.fits(self.limit, key, value, self.headers):
            self._failing.discard(key)
            self._quality.pop(key, None)  # the camera's next frame over the limit tries the best quality again
            return value, ""
        camera = key.decode(errors="replace")
        frame = m.decode(m.Frame, value)
        own = self.quality_of(key)  # the camera's jpeg_quality: encoding again at it or above does not shrink
        qualities = [q for q in SHRINK_QUALITIES if own is None or q < own]
        last, since = self._quality.get(key), self._since.get(key, 0)
        retry = last is None or since >= self.retry_best_after  # from the best quality below the camera's own
        if not retry:
            qualities = [q for q in qualities if q <= last]
        got = reencode_jpeg(frame, lambda f: topics.fits(self.limit, key, m.encode(f), self.headers), qualities)
        if got is not None:
            frame, quality = got
            if self._logged.get(key) != quality:
                log.warning("frames too large for the frames topic are encoded again at a lower JPEG quality (lower "
                            "the camera's jpeg_quality or set its resize_width)",
                            extra={"camera": camera, "bytes": len(value), "limit": self.limit, "quality": quality})
                self._logged[key] = quality
            self._since[key] = since + 1 if not retry and quality == last else 0
            self._quality[key] = quality
            self._failing.discard(key)
            self.errors.labels("too_large_reencoded").inc()
            return m.encode(frame), ""
        self._quality.pop(key, None)
        self.errors.labels("too_large").inc()
        why = (f"frame {frame.seq} of {len(value)} bytes is over the frames topic's limit of {self.limit} bytes, "
               f"even at JPEG quality {SHRINK_QUALITIES[-1]}: skipped")
        if key not in self._failing:
            self._failing.add(key)
            log.error("frame too large for the frames topic: skipped (set the camera's resize_width)",
                      extra={"camera": camera, "seq": frame.seq, "bytes": len(value), "limit": self.limit})
        return None, why


def run_ingest(config: SiteConfig, rt: ServiceRuntime) -> int:
    """Publish every camera's frames until SIGTERM (files: until their end, then idle).

    The cameras are the newest site version's (``site-config``, key ``store.id``) or else the site
    file's; each later version is applied without a restart (:meth:`CameraSupervisor.apply`).
    Readiness: ``broker`` (:class:`BrokerProbe`) and ``cameras`` (:class:`CameraProbe`). A frame the producer
    cannot take while the broker is away is offered again until it is taken or the service stops.
    Where each camera's stream starts is kept on ``ingest-state`` (:func:`ingest_streams`, acknowledged by the
    broker before the stream's first frame): a restarted ingest numbers the same stream as before and a
    re-pointed camera's new stream above its old one.
    """
    from storelens.runtime.kafka import BrokerError, KafkaBus, UndeliveredError, ensure_topics

    ensure_topics(config.kafka)
    bus = KafkaBus(config.kafka, "ingest", heartbeat=rt.beat, stopping=rt.stopping.is_set)
    _count_delivery_errors(bus, rt)
    frames_topic = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    published = [0]
    probe = BrokerProbe(bus, rt, ok=bus.ping())

    frame_headers = m.type_headers(m.Frame)  # ingest publishes Frame bytes only (pump_camera)
    fit = FrameFitter(topic_limit(config.kafka, topics.FRAMES), rt.metrics.errors, frame_headers,
                      quality_of=lambda key: getattr(ingest.camera(key.decode("utf-8")), "jpeg_quality", None))

    deliveries = FrameDeliveries(bus)

    def publish(key: bytes, value: bytes, stopped: Callable[[], bool]) -> bool | None:
        value, too_large = fit(key, value)
        if value is None:
            cameras_probe.too_large(too_large)
            return None

        def once(timeout_s: float) -> None:
            deliveries.sent(key, bus.publish(frames_topic, key, value, timeout_s=timeout_s, headers=frame_headers))

        if not offer_frame(once, stopped, key.decode(errors="replace")):
            return False  # the camera (or the process) stopped first
        rt.metrics.messages_out.labels(frames_topic).inc()
        cameras_probe.published()
        published[0] += 1

    def failed(cam, exc: StoreLensError) -> None:  # one bad camera does not stop the others
        rt.metrics.errors.labels("source").inc()
        cameras_probe.failed(exc)
        log.error("camera failed", extra={"camera": cam.id, "error": str(exc)})

    state_topic = topics.topic_name(topics.INGEST_STATE, config.kafka.topic_prefix)
    state_headers = m.type_headers(m.IngestStream)

    def state(cam, start: StreamStart) -> m.IngestStream:
        seq, frame = start.position or (0, 0)
        return m.IngestStream(camera_id=cam.id, stream_id=start.stream_id, first_seq=start.first_seq,
                              after_source_frame=start.after_source_frame, ts_ms=int(time.time() * 1000),
                              ended=start.ended, target_fps=start.target_fps, position_seq=seq,
                              position_source_frame=frame)

    def keep_stream(cam, start: StreamStart, stopped) -> bool:  # acknowledged before the stream's first frame
        msg = state(cam, start)
        while not stopped():  # the camera's stream stopping (a newer cameras list, or the process): no frame goes out
            try:
                bus.publish_wait(state_topic, cam.id.encode("utf-8"), m.encode(msg), headers=state_headers,
                                 timeout_s=KEEP_STREAM_TRY_S)
                return True
            except UndeliveredError as exc:
                log.warning("ingest state not taken yet, offered again", extra={"camera": cam.id, "error": str(exc)})
        return False

    def keep_position(cam, position: StreamStart) -> None:  # of frames delivered (best effort, not awaited)
        msg = state(cam, position)
        try:
            bus.publish(state_topic, cam.id.encode("utf-8"), m.encode(msg), timeout_s=FRAME_TRY_S,
                        headers=state_headers)
        except UndeliveredError as exc:  # the next frame's position supersedes it
            rt.metrics.errors.labels("ingest_state").inc()
            log.warning("ingest position not taken", extra={"camera": cam.id, "error": str(exc)})

    ingest = CameraSupervisor(publish, rt.stopping.is_set, failed,
                              on_bad_frames=lambda cam, n: rt.metrics.errors.labels("decode").inc(n),
                              reconnect=config.ingest, on_reopen=lambda cam: cameras_probe.reopening(cam),
                              streams=ingest_streams(config, rt), on_stream=keep_stream,
                              on_position=keep_position, publish_takes_stop=True, delivered=deliveries,
                              on_end_retry=lambda cam: rt.metrics.errors.labels("end_marker").inc())
    cameras_probe = CameraProbe(ingest, rt)
    site, newest = site_tail(config)
    cameras, version = config.cameras, 0
    if newest is not None:
        cameras, version = _site_cameras(config, newest) or cameras, newest.version
    ingest.apply(cameras)
    cameras_probe.update()
    log.info("ingest started", extra={"site_version": version, "cameras": ",".join(c.id for c in cameras)})
    with probe:
        _ingest_loop(config, rt, bus, site, ingest, version, cameras_probe)
    ingest.stop(timeout_s=10)
    site.close()
    try:
        bus.flush()
    except UndeliveredError:
        raise
    except BrokerError as exc:  # deliveries that failed at the stop: each one logged and counted already
        log.warning("frames not delivered at the stop", extra={"error": str(exc)})
    log.info("ingest stopped", extra={"published": published[0]})
    return 0


def _ingest_loop(config: SiteConfig, rt: ServiceRuntime, bus, site, ingest: CameraSupervisor, version: int,
                 cameras: CameraProbe) -> None:
    """Until SIGTERM: deliveries, the cameras' outages, and each newer site version applied to the cameras."""
    while not rt.stopping.is_set():
        rt.beat()
        bus.flush_some(0.5)  # (failed deliveries are logged and counted as they fail, and reported no more)
        cameras.update()
        news = []
        while (msg := site.poll(0)) is not None:
            news.append(msg)
        update = newest_site_update(news, config.store.id)
        if update is not None and update.version > version:
            version = update.version
            cams = _site_cameras(config, update)
            if cams is not None:
                diff = ingest.apply(cams)
                cameras.update()
                log.info("site version applied to ingest", extra={
                    "version": version, "added": ",".join(c.id for c in diff.added),
                    "removed": ",".join(diff.removed), "restarted": ",".join(c.id for c in diff.restarted)})


class StageWorker:
    """A registered stage as a Kafka service.

    Args:
        stage: the stage (models loaded).
        groups: consumer groups (default: one group named after the stage over all its inputs).
        hooks: loop hooks (see :class:`~storelens.runtime.runner.Runner`); ``hooks.attach(worker)``
            is called first when present.
        observers: called after each acknowledged message (metrics of the stage).
        checks: extra readiness checks, probed every :data:`PING_EVERY_S` on the loop thread.
        tails: group-less readers (:class:`~storelens.runtime.kafka.TopicTail`, e.g. :func:`site_tail`)
            served before the groups; their messages go through the stage like the groups' ones.
        chores: periodic work run by the loop between messages, with or without any (e.g. reid's
            gallery retention purge, :class:`~storelens.runtime.retention.RetentionPurge`).
    """

    def __init__(self, config: SiteConfig, rt: ServiceRuntime, stage, groups: Sequence[ConsumerGroup] | None = None,
                 hooks: Any = None, observers: Sequence[Callable[[Handled], None]] = (),
                 checks: dict[str, Callable[[], bool]] | None = None, sinks: Sequence[Any] = (),
                 tails: Sequence[Any] = (), chores: Sequence[Any] = ()) -> None:
        from storelens.runtime.kafka import ensure_topics

        self.config, self.rt, self.stage = config, rt, stage
        ensure_topics(config.kafka)
        if hooks is not None and hasattr(hooks, "attach"):
            hooks.attach(self)
        groups = groups or [ConsumerGroup(stage.name, tuple(stage.inputs))]
        self.transport = KafkaTransport(config.kafka, stage.name, groups,
                                        on_assign=getattr(hooks, "on_assign", None),
                                        on_revoke=getattr(hooks, "on_revoke", None),
                                        heartbeat=rt.beat, stopping=rt.stopping.is_set)
        _count_delivery_errors(self.transport.bus, rt)
        for tail in tails:  # polled first, like an earlier group (the transport acks it by topic: a no-op)
            self.transport.consumers.insert(0, tail)
            self.transport._by_topic[tail.topic] = tail
        self._checks = dict(checks or {})
        self._ok = {name: check() for name, check in self._checks.items()}
        self._last_checks, self._last_lag = time.monotonic(), 0.0
        # alive while a sink is retried, and the checks still probed (the store's ping)
        self.core = RunnerCore(stage, sinks, metrics=rt.metrics, chores=chores, beat=self._retry_beat)
        self.runner = Runner(self.core, self.transport, should_stop=rt.stopping.is_set, hooks=hooks,
                             observers=observers, beat=self._periodic, poll_s=0.5,
                             limits=topic_limits(config.kafka, getattr(stage, "outputs", ())))
        #: (topic, partition) of the lag gauge's labels set by this worker
        self._lag_labels: set[tuple[str, int]] = set()
        self._broker = BrokerProbe(self.transport.bus, rt, connected=lambda: self.transport.connected)
        rt.add_check("model", lambda: True)  # the stage's models are loaded before the worker exists
        for sink in self.core.sinks:  # a sink failing its writes (retried) makes the service not ready; a check
            # of the same name (chain-rollup's "storage": the store's ping) must pass too, not replace it
            rt.add_check(sink.name, lambda name=sink.name: self.core.sink_ok[name] and self._ok.get(name, True))
        for name in self._checks:
            if name not in self.core.sink_ok:
                rt.add_check(name, lambda name=name: self._ok[name])

    def _probe_checks(self) -> None:
        """Run the extra readiness checks when :data:`PING_EVERY_S` have passed since the last time."""
        now = time.monotonic()
        if now - self._last_checks > PING_EVERY_S:
            self._last_checks = now
            for name, check in self._checks.items():
                self._ok[name] = check()

    def _retry_beat(self) -> None:
        """The core's heartbeat while a failing sink is retried (the loop's :meth:`_periodic` does not run then)."""
        self.rt.beat()
        self._probe_checks()

    def _periodic(self) -> None:
        self.rt.beat()
        self._probe_checks()
        now = time.monotonic()
        if now - self._last_lag > LAG_EVERY_S:
            self._update_lag()
            self._last_lag = now

    def _update_lag(self) -> None:
        """Set the lag gauge of the partitions read from, and remove the labels of those no longer assigned."""
        for (t, p), lag in self.transport.lag().items():
            self.rt.metrics.lag.labels(t, str(p)).set(lag)
            self._lag_labels.add((t, p))
        owned = set().union(*(c.assigned for c in self.transport.consumers))
        for t, p in self._lag_labels - owned:
            self.rt.metrics.drop_lag(t, p)
        self._lag_labels &= owned

    def run(self) -> int:
        log.info(f"{self.stage.name} started", extra={"inputs": ",".join(self.stage.inputs)})
        with self._broker:
            failure = self.runner.run()
        code = 1 if failure is not None else self.transport.exit_code
        log.info(f"{self.stage.name} stopped", extra={"exit_code": code})
        return code


# -- detect-track: exact recovery from state snapshots ---------------------------------------


#: The ``state_format`` of detect-track's snapshots: each camera's state is a pickle
#: (:meth:`~storelens.stages.core.DetectTrackStage.camera_snapshot`). Unpickling can run code: the
#: ``detect-track-state`` topic must be writable by the store's own services only (Kafka ACLs).
SNAPSHOT_STATE_FORMAT = "pickle:storelens-detect-track-1"


def _key_partition(key: bytes | None) -> int | None:
    """The frames partition of a state record's key ``<frames topic>/<partition>``, if it has one."""
    tail = (key or b"").rpartition(b"/")[2]
    return int(tail) if tail.isdigit() else None


def _state_topic(config: SiteConfig) -> str:
    return topics.topic_name(topics.DETECT_TRACK_STATE, config.kafka.topic_prefix)


def _latest_snapshots(config: SiteConfig, timeout_s: float = 30.0,
                      on_error: Callable[[int], bool] | None = None) -> tuple[dict[int, m.StageSnapshot], int]:
    """Read the compacted state topic to its end: the newest snapshot per frames partition, and the offset after
    the last record read (0: none; the topic's end offset is that when nothing was written since).

    A record that does not decode, or of another ``state_format`` than :data:`SNAPSHOT_STATE_FORMAT` (written by
    a newer version, read after a rollback), is told to ``on_error(offset)``, logged unless that returns ``False`` (a
    record counted at an earlier read), and leaves its partition (from its
    key) without a snapshot, an older one of the same key included: the partition is read from its committed offset
    with fresh trackers (downstream skips a replay by seq), where the worker used to fail at every start."""
    from storelens.runtime.kafka import read_to_end

    state_topic = _state_topic(config)
    out: dict[int, m.StageSnapshot] = {}
    read_end = 0
    for key, value, offset in read_to_end(config.kafka, state_topic, 0, "detect-track-restore", timeout_s):
        read_end = max(read_end, offset + 1)
        if not value:
            continue
        snap = None
        try:
            snap = m.decode(m.StageSnapshot, value)
        except StoreLensError as exc:
            reason = str(exc)
        else:
            if snap.state_format == SNAPSHOT_STATE_FORMAT:
                out[snap.input_partition] = snap
                continue
            reason = f"state_format {snap.state_format!r}, this version reads {SNAPSHOT_STATE_FORMAT!r}"
        partition = _key_partition(key) if snap is None else snap.input_partition
        if on_error is None or on_error(offset) is not False:
            log.error("tracker state snapshot skipped: the partition starts with fresh trackers",
                      extra={"topic": state_topic, "offset": offset, "partition": partition, "reason": reason})
        if partition is not None:
            out.pop(partition, None)
    return out, read_end


class SnapshotHooks:
    """detect-track's recovery: snapshots of the partition's tracker states, then the offset commit."""

    def __init__(self, stage, config: SiteConfig, snapshot_every: int = 50) -> None:
        self.stage, self.snapshot_every = stage, snapshot_every
        self.config = config
        self.t_frames = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
        self.snapshots: dict[int, m.StageSnapshot] = {}
        self.skip_below: dict[int, int] = {}
        self.cameras_of: dict[int, set[str]] = {}
        self.since_snapshot: dict[int, int] = {}
        #: per partition, the offset after the last frame the state reflects (handled, or restored)
        self.next_offset: dict[int, int] = {}
        self._worker: StageWorker | None = None
        #: the state topic's offset after the last record :attr:`snapshots` were read from (None: not read)
        self._read_end: int | None = None
        #: offsets of the state topic's records counted as not restorable (each one counted once over the reads)
        self._bad_records: set[int] = set()

    def attach(self, worker: StageWorker) -> None:
        """Called once the topics exist, before the consumer joins: read the latest snapshots."""
        self._worker = worker
        self.snapshots, self._read_end = _latest_snapshots(self.config, on_error=self._state_error)
        worker.rt.add_check("state", lambda: True)  # restored before the consumer can be assigned anything

    def _state_error(self, offset: int | None = None) -> bool:
        """Count a snapshot or camera state not restored (``storelens_errors_total{reason="tracker_state"}``); a
        record of the state topic (its ``offset``) once over the reads (``False``: counted already)."""
        if offset is not None:
            if offset in self._bad_records:
                return False
            self._bad_records.add(offset)
        if self._worker is not None:
            self._worker.rt.metrics.errors.labels("tracker_state").inc()
        return True

    def _failed(self) -> bool:
        """The stage failed (``on_error: stop``): its state may hold half of the failed frame, which is redelivered
        after the restart. Then no snapshot is written and nothing is committed: the restart replays exactly from
        the last snapshot."""
        runner = getattr(self._worker, "runner", None)
        return getattr(runner, "failure", None) is not None

    def on_assign(self, parts: list[tuple[str, int]]) -> None:
        """Restore the assigned partitions from the state topic as it is now: read again unless nothing was written
        to it since the last read (its end offset tells). The previous owner snapshots and commits a partition in
        its ``on_revoke``, before this assignment, often after this replica's ``attach()`` read (scaling out, a
        rollout): restoring that older read while the consumer starts at the newer committed offset would lose
        the frames in between to the trackers."""
        from storelens.runtime.kafka import end_offsets

        if parts and (self._read_end is None
                      or end_offsets(self.config.kafka, _state_topic(self.config)).get(0, 0) != self._read_end):
            self.snapshots, self._read_end = _latest_snapshots(self.config, on_error=self._state_error)
        self.restore(parts)

    def restore(self, parts: list[tuple[str, int]]) -> None:
        """Restore the assigned partitions' cameras from :attr:`snapshots` (the frames they reflect are skipped)."""
        for _topic, p in parts:
            snap = self.snapshots.get(p)
            if snap is None:
                continue
            for cam, data in snap.camera_state.items():
                if cam in self.stage.cameras:
                    if self.stage.restore_camera(cam, data) is not None:
                        self._state_error()  # a fresh tracker (logged)
                    self.cameras_of.setdefault(p, set()).add(cam)
            self.skip_below[p] = snap.next_offset
            log.info("restored tracker state", extra={"partition": p, "next_offset": snap.next_offset,
                                                       "cameras": ",".join(sorted(snap.camera_state))})

    def on_revoke(self, parts: list[tuple[str, int]]) -> None:
        """Snapshot (and commit) each revoked partition, then forget it, its cameras' trackers included: another
        replica owns it now. Assigned again later, the partition restores its newest snapshot, or (none, or one
        not restorable) starts its cameras with fresh trackers and a new id base (before, the old trackers and id
        counter went on from minutes before, reissuing ids another replica gave meanwhile)."""
        for _topic, p in parts:
            self.snapshot(p)
            for cam in self.cameras_of.get(p, ()):
                self.stage.forget_camera(cam)
            for table in (self.next_offset, self.cameras_of, self.since_snapshot, self.skip_below):
                table.pop(p, None)

    def skip(self, msg) -> bool:
        if msg.topic != self.t_frames:  # site-config (a tail of its own): no offsets, no snapshots
            return False
        if msg.offset < self.skip_below.get(msg.partition, -1):  # already reflected in the restored state
            self.next_offset[msg.partition] = max(self.next_offset.get(msg.partition, 0), msg.offset + 1)
            return True
        return False

    def after(self, h: Handled) -> None:
        if h.topic != topics.FRAMES:
            return
        p, frame = h.msg.partition, h.value
        self.next_offset[p] = h.msg.offset + 1  # handled (or dead-lettered): in the state from now on
        if frame is not None and frame.camera_id in self.stage.cameras:
            self.cameras_of.setdefault(p, set()).add(frame.camera_id)
        self.since_snapshot[p] = self.since_snapshot.get(p, 0) + 1
        if self.since_snapshot[p] >= self.snapshot_every or (frame is not None and frame.end_of_stream):
            self.snapshot(p)

    def snapshot(self, partition: int) -> None:
        """Flush outputs, write the partition's tracker states, then commit the partition's input offset (only
        this partition's: the others are committed with their own snapshots)."""
        if partition not in self.next_offset or self._failed():
            return
        tr = self._worker.transport
        snap = m.StageSnapshot(stage="detect-track", input_topic=self.t_frames, input_partition=partition,
                               next_offset=self.next_offset[partition], state_format=SNAPSHOT_STATE_FORMAT,
                               ts_ms=int(time.time() * 1000))
        for cam in sorted(self.cameras_of.get(partition, ())):
            if cam in self.stage.cameras:  # not the ones a site version removed
                snap.camera_state[cam] = self.stage.camera_snapshot(cam)
        tr.bus.flush()  # rides through a broker restart (KafkaBus.flush), the heartbeat kept
        delivery = tr.bus.publish(tr.topic(topics.DETECT_TRACK_STATE), f"{self.t_frames}/{partition}".encode(),
                                  m.encode(snap), headers=m.type_headers(snap))
        tr.bus.flush()
        self.snapshots[partition] = snap
        offset = None
        if delivery is not None and delivery.done() and not delivery.cancelled() and delivery.exception() is None:
            offset = getattr(delivery.result(), "offset", None)
        if offset is not None and offset == self._read_end:  # nothing else written since the read: it stays whole
            self._read_end = offset + 1
        tr.consumers[-1].commit({(self.t_frames, partition)})
        self.since_snapshot[partition] = 0

    def close(self) -> None:
        """The stop's snapshots. One the broker did not take (the stop's time is up: KafkaBus.stop_left) is logged,
        not raised: the transport still closes, and the partition is replayed from its last snapshot."""
        for p in list(self.next_offset):
            try:
                self.snapshot(p)
            except StoreLensError as exc:
                log.error("snapshot not written at the stop; the partition is replayed from its last snapshot",
                          extra={"partition": p, "error": str(exc)})
                if self._worker is not None:
                    self._worker.transport.exit_code = 1


def detect_track_worker(config: SiteConfig, rt: ServiceRuntime, stage, snapshot_every: int = 50) -> StageWorker:
    """detect-track: offsets are committed by snapshots only, never on a timer; ``site-config`` is read by a
    :func:`site_tail` (no group), so site versions never touch the snapshots or the committed offsets."""
    from storelens.runtime.kafka import ensure_topics

    ensure_topics(config.kafka)
    return StageWorker(config, rt, stage, hooks=SnapshotHooks(stage, config, snapshot_every),
                       groups=[ConsumerGroup(stage.name, (topics.FRAMES,), commit_every=10**12,
                                             commit_interval_s=float("inf"), commit_on_revoke=False)],
                       tails=[site_tail(config, stage)[0]])


# -- faces: attributes and reid --------------------------------------------------------------


class FacesMetrics:
    """Counters of the faces stages (attributes and reid each export the ones they move)."""

    def __init__(self, registry) -> None:
        from prometheus_client import Counter, Gauge

        self.crops = Counter("storelens_face_crops_total", "Person crops analysed for a face (redeliveries and "
                             "end-of-stream markers excluded)", registry=registry)
        self.faces = Counter("storelens_faces_total", "Faces found in person crops, by quality-gate verdict",
                             ["result"], registry=registry)
        self.rejected = Counter("storelens_faces_rejected_total", "Faces the quality gate rejected, by reason "
                                "(a face may have several)", ["reason"], registry=registry)
        self.tracks_final = Counter("storelens_tracks_final_total", "Tracks ended (final track-attributes "
                                    "published)", registry=registry)
        self.matches = Counter("storelens_customer_matches_total", "Tracks matched to a customer, by result "
                               "(new customer or known one)", ["result"], registry=registry)
        self.returning = Counter("storelens_returning_customers_total", "Matches that started a returning "
                                 "customer's visit (visit_no > 1)", registry=registry)
        self.erasures = Counter("storelens_customer_erasures_total", "Erasure requests applied, by result "
                                "(deleted: the customer was in this process' gallery)", ["result"],
                                registry=registry)
        self.purged = Counter("storelens_gallery_purged_embeddings_total", "Embeddings dropped by retention",
                              registry=registry)
        self.gallery_customers = Gauge("storelens_gallery_customers", "Customers in the in-memory gallery",
                                       registry=registry)
        self.gallery_embeddings = Gauge("storelens_gallery_embeddings", "Embeddings in the in-memory gallery",
                                        registry=registry)


class _StatDeltas:
    """Turns a stage's cumulative ``stats`` into counter increments."""

    def __init__(self, stats: dict[str, int]) -> None:
        self.stats, self.last = stats, dict(stats)

    def __call__(self, key: str) -> int:
        now = int(self.stats.get(key, 0))
        d, self.last[key] = now - int(self.last.get(key, 0)), now
        return max(0, d)


def attributes_worker(config: SiteConfig, rt: ServiceRuntime, stage) -> StageWorker:
    """``person-crops`` -> ``face-observations``, ``track-attributes``.

    Metrics besides the common ones: ``storelens_face_crops_total``,
    ``storelens_faces_total{result="accepted"|"rejected"}``,
    ``storelens_faces_rejected_total{reason}``, ``storelens_tracks_final_total``.
    """
    fm, delta = FacesMetrics(rt.registry), _StatDeltas(stage.stats)

    def observe(h: Handled) -> None:
        fm.crops.inc(delta("crops"))
        for p in h.outputs.publish:
            if p.topic == topics.FACE_OBSERVATIONS:
                fm.faces.labels("accepted" if p.message.accepted else "rejected").inc()
                for reason in p.message.rejected_reasons:
                    fm.rejected.labels(reason).inc()
            elif p.topic == topics.TRACK_ATTRIBUTES and p.message.final:
                fm.tracks_final.inc()

    from storelens.runtime.kafka import ensure_topics

    ensure_topics(config.kafka)
    return StageWorker(config, rt, stage, observers=[observe],
                       groups=[ConsumerGroup(stage.name, (topics.PERSON_CROPS,))], tails=[site_tail(config, stage)[0]])


def reid_worker(config: SiteConfig, rt: ServiceRuntime, stage) -> StageWorker:
    """``person-crops`` -> ``customer-matches``; ``customer-erasures`` -> the gallery (served first).

    Erasures are read by a consumer group of their own (``<group_prefix>-reid-erasures``,
    from the earliest retained request). The gallery index lives in this process
    (rebuilt from the gallery store at start), so run one replica per gallery.
    Readiness adds ``gallery``: the gallery store answered its last probe. Metrics
    besides the common ones: ``storelens_face_crops_total``, ``storelens_faces_total{result}``,
    ``storelens_customer_matches_total{result="new"|"known"}``, ``storelens_returning_customers_total``,
    ``storelens_customer_erasures_total{result="deleted"|"unknown"}``,
    ``storelens_gallery_purged_embeddings_total``, ``storelens_gallery_customers``, ``storelens_gallery_embeddings``.
    The gallery is also purged to ``faces.reid.retention_days`` every ``privacy.retention.every_s`` of the wall
    clock (:class:`~storelens.runtime.retention.RetentionPurge` without history, counted in
    ``storelens_privacy_purged_rows_total{kind="gallery_*"}``; camera clock: only as crops arrive), so
    embeddings expire while no crop comes (store closed, cameras down).
    """
    from storelens.runtime.retention import RetentionPurge

    fm, delta = FacesMetrics(rt.registry), _StatDeltas(stage.stats)

    def gauges() -> None:
        fm.gallery_customers.set(len(stage.gallery))
        fm.gallery_embeddings.set(stage.gallery.num_embeddings)

    def ping_gallery() -> bool:
        store = stage.gallery.store
        if store is None:
            return True
        try:
            store.customer_exists("storelens-readiness-probe")
            return True
        except Exception as exc:  # noqa: BLE001 (any failure means "not reachable")
            log.warning("gallery store does not answer", extra={"error": str(exc)})
            return False

    def observe(h: Handled) -> None:
        fm.crops.inc(delta("crops"))
        for key in ("accepted", "rejected"):
            n = delta(key)
            if n:
                fm.faces.labels(key).inc(n)
        if "erased" in h.outputs.info:
            fm.erasures.labels("deleted" if h.outputs.info["erased"] else "unknown").inc()
        # the stage's decisions, not the published matches: a restarted stage publishes its stored ones again
        matches, new, returning = delta("matches"), delta("new"), delta("returning")
        for result, n in (("new", new), ("known", matches - new)):
            if n > 0:
                fm.matches.labels(result).inc(n)
        if returning:
            fm.returning.inc(returning)
        purged = delta("purged_embeddings")
        if purged:
            fm.purged.inc(purged)
        if matches or purged or "erased" in h.outputs.info:
            gauges()

    gauges()
    from storelens.runtime.kafka import ensure_topics

    ensure_topics(config.kafka)
    return StageWorker(config, rt, stage, observers=[observe], checks={"gallery": ping_gallery},
                       groups=[ConsumerGroup("reid-erasures", (topics.CUSTOMER_ERASURES,), commit_every=1),
                               ConsumerGroup(stage.name, (topics.PERSON_CROPS,))],
                       tails=[site_tail(config, stage)[0]],
                       chores=[RetentionPurge(None, config, gallery=stage.gallery)])


#: Service wiring of each stage run as a Kafka service (default: a plain :class:`StageWorker`).
WORKERS: dict[str, Callable[..., StageWorker]] = {
    "detect-track": detect_track_worker,
    "attributes": attributes_worker,
    "reid": reid_worker,
}


def chain_rollup_worker(config: SiteConfig, rt: ServiceRuntime, stage, storage) -> StageWorker:
    """The chain's roll-up: every store's ``store-kpis`` topic (regex ``chain.topic_pattern``) into ``storage``; and
    the chain database's audit log kept to ``privacy.retention.audit_log_days`` (no analytics service there)."""
    from storelens.runtime.retention import RetentionPurge
    from storelens.runtime.sinks import HistorySink

    chain = config.chain
    if chain is None:
        raise ConfigError("the chain-rollup service needs a `chain:` section in the site configuration")
    group = ConsumerGroup(stage.name, tuple(stage.inputs), pattern=chain.topic_pattern,
                          metadata_refresh_s=chain.metadata_refresh_s)
    return StageWorker(config, rt, stage, groups=[group], sinks=[HistorySink(storage)],
                       checks={"storage": storage.ping},
                       chores=[RetentionPurge(storage, config, audit_log_only=True)])


def stage_worker(config: SiteConfig, rt: ServiceRuntime, stage) -> StageWorker:
    return WORKERS.get(stage.name, StageWorker)(config, rt, stage)


class TopicPublisher:
    """What the API publishes: messages to one topic, each waited for until the broker has it (raises
    :class:`~storelens.runtime.kafka.BrokerError` after ``timeout_s``; the API then answers 503 and a retry
    re-sends it: every consumer is idempotent). Concurrent requests share the producer, and each one waits for
    and is answered about its own messages only (:meth:`~storelens.runtime.kafka.KafkaBus.publish_all`).

    The producer (and the topic) is created on first use, so the API starts without the broker. ``bus`` (the
    embedded mode, no broker: :class:`~storelens.storage.outbox.HistoryOutbox`) takes the same messages instead,
    on the base topic, for the embedded pipeline's in-process bus.
    """

    def __init__(self, config: SiteConfig, base_topic: str, timeout_s: float = 10.0, bus: Any = None) -> None:
        self.config = config
        self.base_topic = base_topic
        self.timeout_s = timeout_s
        self.topic = base_topic if bus is not None else topics.topic_name(base_topic, config.kafka.topic_prefix)
        self._bus = bus
        self._lock = threading.Lock()

    def _producer(self):
        from storelens.runtime.kafka import KafkaBus, ensure_topics

        with self._lock:
            if self._bus is None:
                spec = next(s for s in topics.TOPICS if s.name == self.base_topic)
                ensure_topics(self.config.kafka, [spec], timeout_s=self.timeout_s)
                self._bus = KafkaBus(self.config.kafka, "api")
            return self._bus

    def publish(self, items: Sequence[tuple[bytes, Any]]) -> None:
        """Publish ``(key, message)`` items and wait until the broker has every one (BrokerError else).

        After a message the broker refused (e.g. too large), the bus replaces its producer
        (:meth:`~storelens.runtime.kafka.KafkaBus._renew`), so the next publish is delivered."""
        self._producer().publish_all(self.topic, [(key, m.encode(msg), m.type_headers(msg)) for key, msg in items],
                                     self.timeout_s)

    def close(self) -> None:
        """Deliver what is still pending (a publish that timed out) and stop the producer."""
        with self._lock:
            if self._bus is not None:
                bus, self._bus = self._bus, None
                try:
                    bus.close(self.timeout_s)
                except StoreLensError as exc:
                    log.warning("messages not delivered at shutdown", extra={"topic": self.topic, "error": str(exc)})


class CustomerErasurePublisher(TopicPublisher):
    """``on_erasure`` of the API: a :class:`CustomerErasure` on ``customer-erasures`` (keyed by customer id),
    so the reid service (the embedded faces stage: ``bus`` is the history's outbox) drops the customer from its
    in-memory index."""

    def __init__(self, config: SiteConfig, timeout_s: float = 10.0, bus: Any = None) -> None:
        super().__init__(config, topics.CUSTOMER_ERASURES, timeout_s, bus=bus)

    def __call__(self, customer_id: str) -> None:
        import uuid

        req = m.CustomerErasure(customer_id=customer_id, ts_ms=int(time.time() * 1000), request_id=uuid.uuid4().hex)
        self.publish([(customer_id.encode("utf-8"), req)])
        log.info("customer erasure published", extra={"customer": customer_id, "request_id": req.request_id})


class SiteConfigPublisher(TopicPublisher):
    """``on_site_change`` of the API: each saved site version on the compacted ``site-config`` topic (keyed
    by store id), which the analytics service applies without a restart."""

    def __init__(self, config: SiteConfig, timeout_s: float = 10.0) -> None:
        super().__init__(config, topics.SITE_CONFIG, timeout_s)

    def __call__(self, update: m.SiteUpdate) -> None:
        self.publish([(update.store_id.encode("utf-8"), update)])
        log.info("site version published", extra={"version": update.version, "actor": update.actor})


class PosTransactionPublisher(TopicPublisher):
    """``on_transactions`` of the API: each posted sale on ``pos-transactions`` (keyed by store id)."""

    def __init__(self, config: SiteConfig, timeout_s: float = 10.0) -> None:
        super().__init__(config, topics.POS_TRANSACTIONS, timeout_s)

    def __call__(self, transactions: Sequence[m.PosTransaction]) -> None:
        self.publish([(t.store_id.encode("utf-8"), t) for t in transactions])


#: Seconds a stage service's start may take (``ServiceRuntime.start_s``): its startup probe's budget in ``k8s/base``
#: (detect-track, attributes, reid: 36 x 5 s), which ``/healthz`` gives the rest of the start after a wait (reid's
#: deps wait for the schema) as the probe would have.
STAGE_START_S = 180.0


def stage_runtime(name: str, port: int | None = None) -> ServiceRuntime:
    """The health server of the stage service ``name`` (:func:`run_stage_service`), with :data:`STAGE_START_S`."""
    return ServiceRuntime(name, port=port, start_s=STAGE_START_S)


def run_stage_service(name: str, deps: Callable[[SiteConfig], dict[str, Any]] | None = None) -> int:
    """``main()`` of a stage's service: site config, health server, the registered stage
    (models loaded, ``warm_up()`` if it has one), then the Kafka runner until SIGTERM.

    Env: ``STORELENS_CONFIG`` (site YAML), ``STORELENS_HTTP_PORT`` (health/metrics),
    ``STORELENS_LOG_LEVEL``. ``deps(config)`` makes what only the caller can (e.g. the
    face gallery, opened by the storage layer). Returns the exit code (2: bad config).
    """
    import os
    import sys

    from storelens.config import load_config
    from storelens.logs import setup_logging
    from storelens.stages.registry import build_stage

    if "numpy" in sys.modules and "OPENBLAS_NUM_THREADS" not in os.environ:
        log.warning("numpy was imported before OPENBLAS_NUM_THREADS=1 was set: BLAS threads will compete "
                    "with the models' threads (set it first thing in the service's main)")
    setup_logging(os.environ.get("STORELENS_LOG_LEVEL", "INFO"))
    try:
        config = load_config(os.environ.get("STORELENS_CONFIG", "/etc/storelens/site.yaml"))
        rt = stage_runtime(name)
        rt.add_check("model", lambda: False)  # not ready until the models are loaded
        rt.start()
        stage = build_stage(name, config, **(deps(config) if deps is not None else {}))
        warm_up = getattr(stage, "warm_up", None)
        if warm_up is not None:
            warm_up()
        if rt.stopping.is_set():  # SIGTERM while loading: nothing to stop yet
            return 0
        return stage_worker(config, rt, stage).run()
    except WaitStopped:  # SIGTERM while deps() waited for the schema (storage.migrate: wait): as while loading
        return 0
    except StoreLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
