"""Run loops of the Kafka services (ingest, detect-track, attributes, reid); the services only call these.

detect-track recovers *exactly*: its per-camera tracker state is written to
the compacted ``detect-track-state`` topic together with the input offset it
reflects, and consumer offsets are committed only right after such a
snapshot. After a crash the service restores the snapshot, skips input it
already reflects and re-processes the rest, which reproduces the same
TrackedFrames (same seq); downstream sinks skip or upsert them. So a
SIGKILL mid-stream changes nothing in the final counts.

attributes and reid (:class:`AttributesWorker`, :class:`ReidWorker`) are
at-least-once: an input offset is committed only after the outputs of the
crops before it were flushed to the broker, and every sink upserts
(``track-attributes`` by camera and track, ``customer-matches`` by a
deterministic event id). Their per-track state (face aggregates, embeddings
awaiting a decision) is in memory only: after a restart a track that was in
progress continues with the evidence of the redelivered and new crops only.
"""
from __future__ import annotations

import logging
import threading
import time

from storelens import messages as m
from storelens import topics
from storelens.config import SiteConfig
from storelens.errors import DecodeError, StoreLensError
from storelens.ingest import camera_frames
from storelens.service import ServiceRuntime
from storelens.stages import DetectTrackStage, dead_letter

log = logging.getLogger(__name__)


def run_ingest(config: SiteConfig, rt: ServiceRuntime) -> int:
    """Publish every camera's frames until SIGTERM (files: until their end, then idle)."""
    from storelens.kafka_bus import KafkaBus, ensure_topics

    ensure_topics(config.kafka)
    bus = KafkaBus(config.kafka, "ingest")
    frames_topic = topics.topic_name(topics.FRAMES, config.kafka.topic_prefix)
    published = {c.id: 0 for c in config.cameras}
    failed: dict[str, str] = {}
    broker_ok = [bus.ping()]
    rt.add_check("broker", lambda: broker_ok[0])

    def pump(cam) -> None:
        key = topics.camera_key(cam.id)
        try:
            for frame in camera_frames(cam, should_stop=rt.stopping.is_set):
                bus.publish(frames_topic, key, m.encode(frame))
                rt.metrics.messages_out.labels(frames_topic).inc()
                published[cam.id] += 1
            log.info("source ended", extra={"camera": cam.id, "frames": published[cam.id]})
        except StoreLensError as exc:  # one bad camera does not stop the others
            failed[cam.id] = str(exc)
            rt.metrics.errors.labels("source").inc()
            log.error("camera failed", extra={"camera": cam.id, "error": str(exc)})

    threads = [threading.Thread(target=pump, args=(c,), name=f"ingest-{c.id}", daemon=True) for c in config.cameras]
    for t in threads:
        t.start()
    last_ping = time.monotonic()
    while not rt.stopping.is_set():
        rt.beat()
        bus.flush_some(0.5)
        if time.monotonic() - last_ping > 10:
            broker_ok[0], last_ping = bus.ping(), time.monotonic()
    for t in threads:
        t.join(timeout=10)
    bus.flush()
    log.info("ingest stopped", extra={"published": sum(published.values())})
    return 0


def _latest_snapshots(config: SiteConfig, timeout_s: float = 30.0) -> dict[int, m.StageSnapshot]:
    """Read the compacted state topic to its end: the newest snapshot per frames partition."""
    from confluent_kafka import Consumer, TopicPartition

    from storelens.kafka_bus import client_config

    c = Consumer({**client_config(config.kafka), "group.id": f"{config.kafka.group_prefix}-detect-track-restore",
                  "enable.auto.commit": False, "fetch.message.max.bytes": 64 * 1024**2,
                  "max.partition.fetch.bytes": 64 * 1024**2})
    try:
        state_topic = topics.topic_name(topics.DETECT_TRACK_STATE, config.kafka.topic_prefix)
        lo, hi = c.get_watermark_offsets(TopicPartition(state_topic, 0), timeout=timeout_s)
        out: dict[int, m.StageSnapshot] = {}
        if hi <= lo:
            return out
        c.assign([TopicPartition(state_topic, 0, lo)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is None or msg.error():
                continue
            if msg.value():
                snap = m.decode(m.StageSnapshot, msg.value())
                out[snap.input_partition] = snap
            if msg.offset() >= hi - 1:
                return out
        raise StoreLensError("timed out reading detect-track snapshots")
    finally:
        c.close()


class DetectTrackWorker:
    """Kafka consumer loop around :class:`DetectTrackStage` with snapshot-based recovery."""

    def __init__(self, config: SiteConfig, rt: ServiceRuntime, stage: DetectTrackStage,
                 snapshot_every: int = 50) -> None:
        from storelens.kafka_bus import KafkaBus, KafkaConsumer, ensure_topics

        self.config, self.rt, self.stage = config, rt, stage
        self.snapshot_every = snapshot_every
        ensure_topics(config.kafka)
        prefix = config.kafka.topic_prefix
        self.t_frames, self.t_tracks, self.t_state, self.t_dead, self.t_crops = (
            topics.topic_name(t, prefix)
            for t in (topics.FRAMES, topics.TRACKS, topics.DETECT_TRACK_STATE, topics.DEAD_LETTER,
                      topics.PERSON_CROPS))
        self.bus = KafkaBus(config.kafka, "detect-track")
        self.snapshots = _latest_snapshots(config)
        self.skip_below: dict[int, int] = {}
        self.cameras_of: dict[int, set[str]] = {}
        self.since_snapshot: dict[int, int] = {}
        self.next_offset: dict[int, int] = {}
        # offsets are committed by snapshot() only, never on a timer
        self.consumer = KafkaConsumer(config.kafka, "detect-track", [self.t_frames], bus=self.bus,
                                      commit_every=10**12, commit_interval_s=float("inf"),
                                      on_assign=self._on_assign, on_revoke=self._on_revoke)
        rt.add_check("broker", lambda: self.consumer.connected)
        rt.add_check("model", lambda: True)  # the stage's detector is loaded before the worker exists
        self.recovered = True
        rt.add_check("state", lambda: self.recovered)

    def _on_assign(self, parts: list[tuple[str, int]]) -> None:
        for _topic, p in parts:
            snap = self.snapshots.get(p)
            if snap is None:
                continue
            for cam, data in snap.camera_state.items():
                if cam in self.stage.cameras:
                    self.stage.restore_camera(cam, data)
                    self.cameras_of.setdefault(p, set()).add(cam)
            self.skip_below[p] = snap.next_offset
            log.info("restored tracker state", extra={"partition": p, "next_offset": snap.next_offset,
                                                       "cameras": ",".join(sorted(snap.camera_state))})

    def _on_revoke(self, parts: list[tuple[str, int]]) -> None:
        for _topic, p in parts:
            self.snapshot(p)

    def snapshot(self, partition: int) -> None:
        """Flush outputs, write the partition's tracker states, then commit the input offset."""
        if partition not in self.next_offset:
            return
        snap = m.StageSnapshot(stage="detect-track", input_topic=self.t_frames, input_partition=partition,
                               next_offset=self.next_offset[partition], state_format="pickle:storelens-detect-track-1",
                               ts_ms=int(time.time() * 1000))
        for cam in sorted(self.cameras_of.get(partition, ())):
            snap.camera_state[cam] = self.stage.camera_snapshot(cam)
        self.bus.flush()
        self.bus.publish(self.t_state, f"{self.t_frames}/{partition}".encode(), m.encode(snap))
        self.bus.flush()
        self.snapshots[partition] = snap
        self.consumer.commit()
        self.since_snapshot[partition] = 0

    def run(self) -> int:
        rt, metrics = self.rt, self.rt.metrics
        last_lag = 0.0
        while not rt.stopping.is_set():
            rt.beat()
            if time.monotonic() - last_lag > 5:
                for (t, p), lag in self.consumer.lag().items():
                    metrics.lag.labels(t, str(p)).set(lag)
                last_lag = time.monotonic()
            msg = self.consumer.poll(0.5)
            if msg is None:
                continue
            metrics.messages_in.labels(msg.topic).inc()
            p = msg.partition
            self.next_offset[p] = msg.offset + 1
            if msg.offset < self.skip_below.get(p, -1):
                metrics.duplicates.labels(msg.topic).inc()  # already reflected in the restored state
                self.consumer.done()
                continue
            t0 = time.perf_counter()
            frame = None
            try:
                frame = m.decode(m.Frame, msg.value)
                tf = self.stage.process(frame)
            except DecodeError as exc:
                self._dead_letter(msg, str(exc))
                tf = None
            metrics.seconds.labels(msg.topic).observe(time.perf_counter() - t0)
            if frame is not None and frame.camera_id in self.stage.cameras:
                self.cameras_of.setdefault(p, set()).add(frame.camera_id)
            if tf is not None:
                self.bus.publish(self.t_tracks, msg.key, m.encode(tf))
                metrics.messages_out.labels(self.t_tracks).inc()
                for crop in self.stage.last_crops:
                    self.bus.publish(self.t_crops, msg.key, m.encode(crop))
                    metrics.messages_out.labels(self.t_crops).inc()
            elif frame is not None and frame.camera_id in self.stage.cameras:
                metrics.duplicates.labels(msg.topic).inc()
            self.consumer.done()
            self.since_snapshot[p] = self.since_snapshot.get(p, 0) + 1
            if self.since_snapshot[p] >= self.snapshot_every or (frame is not None and frame.end_of_stream):
                self.snapshot(p)
        for p in list(self.next_offset):
            self.snapshot(p)
        self.consumer.close()
        log.info("detect-track stopped")
        return 0

    def _dead_letter(self, msg, reason: str) -> None:
        self.rt.metrics.dead_letters.labels(msg.topic).inc()
        self.rt.metrics.errors.labels("decode").inc()
        log.warning("dead letter", extra={"topic": msg.topic, "offset": msg.offset, "reason": reason})
        self.bus.publish(self.t_dead, msg.key,
                         m.encode(dead_letter(msg.topic, msg.key, msg.value, reason, "detect-track")))


# -- faces: attributes and reid ------------------------------------------------------------

#: Seconds between two broker pings (and gallery store pings) of the readiness checks.
PING_EVERY_S = 10.0
#: Seconds between two updates of the consumer lag gauges.
LAG_EVERY_S = 5.0


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


def _store_errors() -> tuple[type[BaseException], ...]:
    """Errors of a gallery store that is unreachable or failing (PostgreSQL, SQLite)."""
    import sqlite3

    from storelens.storage import StorageError

    errs: tuple[type[BaseException], ...] = (StorageError, sqlite3.Error)
    try:
        import psycopg

        errs += (psycopg.Error,)
    except ImportError:  # pragma: no cover (psycopg is a dependency)
        pass
    return errs


class _CropWorker:
    """Kafka loop of a faces service: ``person-crops`` in, the stage's outputs out (see the subclasses).

    A crop that is not a PersonCrop, names an unknown camera or carries no
    decodable JPEG goes to ``dead-letter`` with the reason; so does a crop
    the stage fails on (``errors{reason="process"}``), so one bad image never
    blocks its partition. The JPEG is decoded here, before the stage sees
    the crop, so a corrupt crop never advances the stage's redelivery check.
    """

    name = ""

    def __init__(self, config: SiteConfig, rt: ServiceRuntime, stage) -> None:
        from storelens.kafka_bus import KafkaBus, KafkaConsumer, ensure_topics

        self.config, self.rt, self.stage = config, rt, stage
        self.metrics = rt.metrics
        self.faces = FacesMetrics(rt.registry)
        ensure_topics(config.kafka)
        prefix = config.kafka.topic_prefix
        self.t_crops = topics.topic_name(topics.PERSON_CROPS, prefix)
        self.t_dead = topics.topic_name(topics.DEAD_LETTER, prefix)
        self.bus = KafkaBus(config.kafka, self.name)
        # at-least-once: done() after the crop's outputs are published; a commit flushes the bus first
        self.consumer = KafkaConsumer(config.kafka, self.name, [self.t_crops], bus=self.bus)
        self.consumers = [self.consumer]
        self._broker_ok, self._last_ping, self._last_lag = True, time.monotonic(), 0.0
        self._last_stats = dict(stage.stats)
        self.exit_code = 0
        rt.add_check("broker", lambda: self._broker_ok and all(c.connected for c in self.consumers))
        rt.add_check("model", lambda: True)  # the stage's models are loaded before the worker exists

    # -- loop ------------------------------------------------------------------------------

    def run(self) -> int:
        rt = self.rt
        log.info(f"{self.name} started", extra={"input": self.t_crops})
        try:
            while not rt.stopping.is_set():
                rt.beat()
                self._periodic()
                if self._poll_other():
                    continue
                msg = self.consumer.poll(0.5)
                if msg is None:
                    continue
                if not self.handle(msg):
                    break  # fatal (e.g. the gallery store failed): exit; the crop is redelivered
                self.consumer.done()
        finally:
            self._close()
        log.info(f"{self.name} stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def _poll_other(self) -> bool:
        """Hook: serve another input first; True when it handled a message."""
        return False

    def _periodic(self) -> None:
        now = time.monotonic()
        if now - self._last_ping > PING_EVERY_S:
            self._broker_ok, self._last_ping = self.bus.ping(), now
            self._ping_more()
        if now - self._last_lag > LAG_EVERY_S:
            for c in self.consumers:
                for (t, p), lag in c.lag().items():
                    self.metrics.lag.labels(t, str(p)).set(lag)
            self._last_lag = now

    def _ping_more(self) -> None:
        """Hook: further readiness probes, run every :data:`PING_EVERY_S` on the loop thread."""

    def _close(self) -> None:
        """Flush what was produced, then commit what was processed (SIGTERM and errors alike)."""
        for c in self.consumers:
            try:
                c.close()  # flushes the bus, then commits; never commits past unflushed outputs
            except StoreLensError as exc:
                log.error("flush at shutdown failed; uncommitted input will be redelivered",
                          extra={"error": str(exc)})
                self.exit_code = self.exit_code or 1
        try:
            self.bus.flush()
        except StoreLensError as exc:
            log.error("flush at shutdown failed", extra={"error": str(exc)})
            self.exit_code = self.exit_code or 1

    # -- one crop ---------------------------------------------------------------------------

    def handle(self, msg) -> bool:
        """Process one ``person-crops`` message; False when the worker must stop (not done)."""
        from storelens.faces.stages import decode_crop
        from storelens.stages import UnknownCamera

        self.metrics.messages_in.labels(msg.topic).inc()
        t0 = time.perf_counter()
        try:
            crop = m.decode(m.PersonCrop, msg.value)
            if crop.camera_id not in self.stage.cameras:
                raise UnknownCamera(f"unknown camera {crop.camera_id!r}")
            image = None if crop.end_of_stream else decode_crop(crop)
        except DecodeError as exc:
            self._dead_letter(msg, str(exc), "unknown_camera" if isinstance(exc, UnknownCamera) else "decode")
            return True
        try:
            self.process(crop, image)
        except DecodeError as exc:
            self._dead_letter(msg, str(exc), "decode")
        except _store_errors() as exc:
            self.metrics.errors.labels("gallery").inc()
            log.error("gallery store failed; stopping (the crop is redelivered after the restart)",
                      extra={"error": str(exc), "camera": crop.camera_id, "seq": crop.seq})
            self.exit_code = 1
            return False
        except Exception as exc:  # noqa: BLE001 (e.g. a model error on one odd image): never block the partition
            log.exception("crop processing failed", extra={"camera": crop.camera_id, "seq": crop.seq,
                                                           "track_id": crop.track_id})
            self._dead_letter(msg, f"cannot process {m.PersonCrop.DESCRIPTOR.full_name}: {exc!r}", "process")
        self.metrics.seconds.labels(msg.topic).observe(time.perf_counter() - t0)
        self._stat_counters()
        return True

    def process(self, crop: m.PersonCrop, image) -> None:
        raise NotImplementedError

    def publish(self, base: str, camera_id: str, value: bytes) -> None:
        topic = topics.topic_name(base, self.config.kafka.topic_prefix)
        self.bus.publish(topic, topics.camera_key(camera_id), value)
        self.metrics.messages_out.labels(topic).inc()

    def _delta(self, key: str) -> int:
        now = int(self.stage.stats.get(key, 0))
        d, self._last_stats[key] = now - int(self._last_stats.get(key, 0)), now
        return max(0, d)

    def _stat_counters(self) -> None:
        self.faces.crops.inc(self._delta("crops"))

    def _dead_letter(self, msg, reason: str, error: str) -> None:
        self.metrics.dead_letters.labels(msg.topic).inc()
        self.metrics.errors.labels(error).inc()
        log.warning("dead letter", extra={"topic": msg.topic, "offset": msg.offset, "reason": reason})
        self.bus.publish(self.t_dead, msg.key, m.encode(dead_letter(msg.topic, msg.key, msg.value, reason, self.name)))
        self.metrics.messages_out.labels(self.t_dead).inc()


class AttributesWorker(_CropWorker):
    """``person-crops`` -> :class:`~storelens.faces.stages.AttributesStage` -> ``face-observations``
    (one per face found) and ``track-attributes`` (per-track summaries, ``final`` when the track ends),
    keyed by camera id.

    Metrics besides the common ones: ``storelens_face_crops_total``,
    ``storelens_faces_total{result="accepted"|"rejected"}``,
    ``storelens_faces_rejected_total{reason}``, ``storelens_tracks_final_total``.
    """

    name = "attributes"

    def process(self, crop: m.PersonCrop, image) -> None:
        out = self.stage.process(crop, image)
        if out.duplicate:
            self.metrics.duplicates.labels(self.t_crops).inc()
            return
        for obs in out.observations:
            self.publish(topics.FACE_OBSERVATIONS, crop.camera_id, m.encode(obs))
            self.faces.faces.labels("accepted" if obs.accepted else "rejected").inc()
            for reason in obs.rejected_reasons:
                self.faces.rejected.labels(reason).inc()
        for summary in out.summaries:
            self.publish(topics.TRACK_ATTRIBUTES, crop.camera_id, m.encode(summary))
            if summary.final:
                self.faces.tracks_final.inc()


class ReidWorker(_CropWorker):
    """``person-crops`` -> :class:`~storelens.faces.stages.ReidStage` -> ``customer-matches`` (one per
    track, keyed by camera id); ``customer-erasures`` -> :meth:`ReidStage.erase`.

    Erasures are read by a consumer group of their own (``<group_prefix>-reid-erasures``,
    from the earliest retained request) and served before the next crop. The
    gallery index lives in this process (rebuilt from the gallery store at
    start), so run one replica per gallery.

    Readiness adds ``gallery``: the gallery store answered its last probe.
    Metrics besides the common ones: ``storelens_face_crops_total``,
    ``storelens_faces_total{result}``, ``storelens_customer_matches_total{result="new"|"known"}``,
    ``storelens_returning_customers_total``, ``storelens_customer_erasures_total{result="deleted"|"unknown"}``,
    ``storelens_gallery_purged_embeddings_total``, ``storelens_gallery_customers``,
    ``storelens_gallery_embeddings``.
    """

    name = "reid"

    def __init__(self, config: SiteConfig, rt: ServiceRuntime, stage) -> None:
        from storelens.kafka_bus import KafkaConsumer

        super().__init__(config, rt, stage)
        self.t_erasures = topics.topic_name(topics.CUSTOMER_ERASURES, config.kafka.topic_prefix)
        self.erasures = KafkaConsumer(config.kafka, "reid-erasures", [self.t_erasures], bus=self.bus,
                                      commit_every=1)
        self.consumers.append(self.erasures)
        self._gallery_ok = self._ping_gallery()
        rt.add_check("gallery", lambda: self._gallery_ok)
        self._update_gallery_gauges()

    def _ping_gallery(self) -> bool:
        store = self.stage.gallery.store
        if store is None:
            return True
        try:
            store.customer_exists("storelens-readiness-probe")
            return True
        except Exception as exc:  # noqa: BLE001 (any failure means "not reachable")
            log.warning("gallery store does not answer", extra={"error": str(exc)})
            return False

    def _ping_more(self) -> None:
        self._gallery_ok = self._ping_gallery()

    def _update_gallery_gauges(self) -> None:
        self.faces.gallery_customers.set(len(self.stage.gallery))
        self.faces.gallery_embeddings.set(self.stage.gallery.num_embeddings)

    def _poll_other(self) -> bool:
        msg = self.erasures.poll(0)
        if msg is None:
            return False
        self.metrics.messages_in.labels(msg.topic).inc()
        try:
            req = m.decode(m.CustomerErasure, msg.value)
            if not req.customer_id:
                raise DecodeError("customer erasure without a customer_id")
        except DecodeError as exc:
            self._dead_letter(msg, str(exc), "decode")
            self.erasures.done()
            return True
        try:
            deleted = self.stage.erase(req.customer_id)
        except _store_errors() as exc:
            self.metrics.errors.labels("gallery").inc()
            log.error("gallery store failed during an erasure; stopping (it is redelivered after the restart)",
                      extra={"error": str(exc)})
            self.exit_code = 1
            self.rt.stopping.set()
            return True
        self.faces.erasures.labels("deleted" if deleted else "unknown").inc()
        self._update_gallery_gauges()
        log.info("customer erased", extra={"customer": req.customer_id, "in_gallery": deleted,
                                           "request_id": req.request_id})
        self.erasures.done()
        return True

    def process(self, crop: m.PersonCrop, image) -> None:
        before = self.stage.stats["crops"]
        matches = self.stage.process(crop, image)
        if not crop.end_of_stream and self.stage.stats["crops"] == before:
            self.metrics.duplicates.labels(self.t_crops).inc()
        for match in matches:
            self.publish(topics.CUSTOMER_MATCHES, match.camera_id, m.encode(match))
            self.faces.matches.labels("new" if match.is_new else "known").inc()
            if match.returning:
                self.faces.returning.inc()
        if matches:
            self._update_gallery_gauges()

    def _stat_counters(self) -> None:
        super()._stat_counters()
        for key in ("accepted", "rejected"):
            n = self._delta(key)
            if n:
                self.faces.faces.labels(key).inc(n)
        purged = self._delta("purged_embeddings")
        if purged:
            self.faces.purged.inc(purged)
            self._update_gallery_gauges()


class CustomerErasurePublisher:
    """``on_erasure`` of the API (distributed mode): publish a :class:`CustomerErasure` to
    ``customer-erasures`` (keyed by customer id) and wait until the broker has it.

    The producer is created on first use, so the API starts without the broker.
    Raises :class:`~storelens.kafka_bus.BrokerError` when the request was not
    acknowledged within ``timeout_s`` (the API answers 503; a retry re-sends it, erasing twice is harmless).
    """

    def __init__(self, config: SiteConfig, timeout_s: float = 10.0) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self.topic = topics.topic_name(topics.CUSTOMER_ERASURES, config.kafka.topic_prefix)
        self._bus = None
        self._lock = threading.Lock()

    def _producer(self):
        from storelens.kafka_bus import KafkaBus, ensure_topics

        with self._lock:
            if self._bus is None:
                spec = next(s for s in topics.TOPICS if s.name == topics.CUSTOMER_ERASURES)
                ensure_topics(self.config.kafka, [spec], timeout_s=self.timeout_s)
                self._bus = KafkaBus(self.config.kafka, "api")
            return self._bus

    def __call__(self, customer_id: str) -> None:
        import uuid

        bus = self._producer()
        req = m.CustomerErasure(customer_id=customer_id, ts_ms=int(time.time() * 1000), request_id=uuid.uuid4().hex)
        bus.publish(self.topic, customer_id.encode("utf-8"), m.encode(req))
        bus.flush(self.timeout_s)
        log.info("customer erasure published", extra={"customer": customer_id, "request_id": req.request_id})

    def close(self) -> None:
        with self._lock:
            if self._bus is not None:
                try:
                    self._bus.flush(self.timeout_s)
                except StoreLensError as exc:
                    log.warning("erasure requests not delivered at shutdown", extra={"error": str(exc)})
