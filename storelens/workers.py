"""Run loops of the Kafka services (ingest, detect-track); the services only call these.

detect-track recovers *exactly*: its per-camera tracker state is written to
the compacted ``detect-track-state`` topic together with the input offset it
reflects, and consumer offsets are committed only right after such a
snapshot. After a crash the service restores the snapshot, skips input it
already reflects and re-processes the rest, which reproduces the same
TrackedFrames (same seq); downstream sinks skip or upsert them. So a
SIGKILL mid-stream changes nothing in the final counts.
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


def run_consumer_stub(config: SiteConfig, rt: ServiceRuntime, name: str, in_topics: list[str]) -> int:
    """A service whose processing is not built yet: it consumes and commits its input
    (so its lag and health are real) and publishes nothing. The faces issue replaces it."""
    from storelens.kafka_bus import KafkaConsumer, ensure_topics

    ensure_topics(config.kafka)
    names = [topics.topic_name(t, config.kafka.topic_prefix) for t in in_topics]
    consumer = KafkaConsumer(config.kafka, name, names)
    rt.add_check("broker", lambda: consumer.connected)
    while not rt.stopping.is_set():
        rt.beat()
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        rt.metrics.messages_in.labels(msg.topic).inc()
        consumer.done()
    consumer.close()
    return 0
