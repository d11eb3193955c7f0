"""The analytics service on Kafka: a faust-streaming application.

``tracks`` (``storelens.v1.TrackedFrame``, keyed by camera id) goes in;
line crossings, occupancy and per-window counts come out, to PostgreSQL
(history), Redis (live state) and the topics ``crossings``, ``occupancy``,
``counts``; undecodable messages and unknown cameras go to ``dead-letter``.

The faces services' outputs are sunk here too: ``track-attributes``
(``TrackAttributes``, upserted by camera and track, an older ``last_seq``
never replacing a newer one) and ``customer-matches`` (``CustomerMatch``,
upserted by ``event_id``) go to PostgreSQL through the same sink thread and
retry path, each message acknowledged only after its write; they keep no
state, so redeliveries are harmless.

State: a faust :class:`~faust.Table` keyed by camera id holds
:meth:`AnalyticsStage.camera_state` (JSON: per-track line sides, occupancy,
open count windows, last processed seq). Its store is ``memory://``; the
table's compacted changelog topic ``<topic_prefix><group_prefix>-analytics-camera-state-changelog``
is the durable copy, replayed into memory when partitions are assigned
(faust recovery) before any ``tracks`` message is processed. The table and
``tracks`` are co-partitioned (same key, same partition count), and faust
writes a table update to the changelog partition of the message being
processed, so the state of a camera always lives next to its input.

Effect-once processing from at-least-once delivery:

1. a redelivered frame (``seq`` <= the state's last seq) is skipped by the stage;
2. the sinks are idempotent (PostgreSQL upserts by deterministic ids, Redis
   compare-and-set by timestamp), and the frame's outputs are written
   *before* the new state: PostgreSQL and Redis first, then the output
   messages (awaited until the broker acknowledged them), then the table;
3. the changelog is flushed before the input event is acknowledged, and only
   events whose processing finished are acknowledged (manual acks: faust
   would otherwise ack an event interrupted by SIGTERM);
4. faust still commits events it *skipped* while flow control was off
   (stopping, rebalancing), so every camera state also records the ``tracks``
   partition and next offset it reflects, and an event whose offset jumps
   past the next expected one (after an assignment: the recorded one) is
   preceded by a re-read of the gap (a private consumer, in order).

A crash or restart anywhere therefore either replays the frame against the old state
(same outputs, upserted again) or finds the new state and skips it.

The sinks block (psycopg, redis-py); they run in one dedicated worker thread
(``run_in_executor``) so the event loop keeps heartbeating while a write
waits, and a failing sink is retried with backoff (the partition waits;
nothing is skipped).

Example (see ``services/analytics/main.py``):
    >>> app = build_app(config, storage, live, rt)           # doctest: +SKIP
    >>> run_worker(app, rt)                                  # doctest: +SKIP
    0
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import ssl
import threading
import time
from typing import Any, Callable, TypeVar

import faust

from storelens import messages as m
from storelens import topics
from storelens.config import KafkaConfig, SiteConfig
from storelens.errors import DecodeError
from storelens.service import ServiceRuntime
from storelens.stages import AnalyticsOutput, AnalyticsStage, UnknownCamera, dead_letter
from storelens.topics import TopicSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE = "analytics"
#: Name of the faust table of per-camera state.
TABLE_NAME = "camera-state"
#: Format tag of the table values (bump when :meth:`AnalyticsStage.camera_state` changes incompatibly).
STATE_FORMAT = "json:storelens-analytics-camera-state-1"
#: Key, in a camera's table value, of the input record: the ``tracks`` partition and the
#: next offset that the state reflects (see :meth:`AnalyticsApp._in_order`).
INPUT_KEY = "_input"
#: Longest wait for the messages of a gap between the recovered state and the committed offset.
REWIND_TIMEOUT_S = 30.0
#: Seconds between broker pings of the readiness check.
BROKER_PING_S = 10.0
#: Longest wait between two retries of a failing sink.
MAX_RETRY_DELAY_S = 5.0
#: Not ready (rebalancing/recovering) this long while the loop turns: stop the heartbeat (``/healthz`` fails).
STUCK_NOT_READY_S = float(os.environ.get("STORELENS_ANALYTICS_STUCK_S", 300))
#: After SIGTERM, exit hard if faust has not stopped within this many seconds.
SHUTDOWN_TIMEOUT_S = float(os.environ.get("STORELENS_SHUTDOWN_TIMEOUT_S", 30))


def app_id(cfg: KafkaConfig) -> str:
    """faust app id = consumer group id, e.g. ``storelens-analytics``."""
    return f"{cfg.group_prefix}-{SERVICE}"


def _changelog_base(cfg: KafkaConfig) -> str:
    return f"{app_id(cfg)}-{TABLE_NAME}-changelog"  # faust's own naming, <app id>-<table>-changelog


def changelog_topic(cfg: KafkaConfig) -> str:
    """The table's changelog topic, e.g. ``storelens-analytics-camera-state-changelog`` (with ``kafka.topic_prefix``)."""
    return topics.topic_name(_changelog_base(cfg), cfg.topic_prefix)


def changelog_spec(cfg: KafkaConfig) -> TopicSpec:
    """Compacted, unbounded, co-partitioned with ``tracks`` (``cfg.partitions``); unprefixed, as in :data:`TOPICS`."""
    return TopicSpec(_changelog_base(cfg), STATE_FORMAT, cfg.partitions, -1, compacted=True)


def broker_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """faust/aiokafka settings equivalent to the ``kafka`` section (bootstrap and security)."""
    urls = [f"kafka://{h.strip()}" for h in cfg.bootstrap_servers.split(",") if h.strip()]
    out: dict[str, Any] = {"broker": urls}
    proto = cfg.security_protocol
    ctx = ssl.create_default_context() if proto in ("SSL", "SASL_SSL") else None
    if proto.startswith("SASL_"):
        out["broker_credentials"] = faust.SASLCredentials(
            username=cfg.sasl_username, password=cfg.sasl_password, ssl_context=ctx,
            mechanism=cfg.sasl_mechanism or "PLAIN")
    elif ctx is not None:
        out["broker_credentials"] = ctx
    return out


class AnalyticsApp:
    """The faust app plus the per-process stage, sinks and health signals of the analytics service."""

    def __init__(self, config: SiteConfig, storage, live, rt: ServiceRuntime, *,
                 auto_offset_reset: str | None = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config, self.storage, self.live, self.rt = config, storage, live, rt
        self.metrics = rt.metrics
        self.cameras = {c.id for c in config.cameras}
        self.stage = AnalyticsStage(config)
        self._fresh = AnalyticsStage(config)  # never processes: source of the initial state of a camera
        #: The table value the stage's camera state was last loaded from or saved as.
        self._cache: dict[str, dict | None] = {}
        self._sink = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="analytics-sink")
        self._sink_ok = {"storage": True, "live": True}
        self._broker_ok = False
        self._broker_checked = 0.0
        self._admin = None
        self._last_offset: dict[Any, int] = {}
        #: (tp, offset) of the event being handled.
        self._input: tuple[Any, int] | None = None
        #: tp -> consumer generation of the last event seen, and the next offset expected (:meth:`_in_order`).
        self._gen_of: dict[Any, int] = {}
        self._expected: dict[Any, int | None] = {}
        self._not_ready_since: float | None = None
        self._tables_ready = False
        self._stuck_logged = False
        kcfg = config.kafka
        reset = auto_offset_reset or os.environ.get("STORELENS_ANALYTICS_AUTO_OFFSET_RESET", "earliest")
        self.app = faust.App(
            app_id(kcfg),
            **broker_settings(kcfg),
            loop=loop,
            store="memory://",
            topic_partitions=kcfg.partitions,
            topic_replication_factor=kcfg.replication_factor,
            key_serializer="raw",
            value_serializer="raw",
            web_enabled=False,
            autodiscover=False,
            consumer_auto_offset_reset=reset,
            producer_acks=-1,
            stream_recovery_delay=1.0,
            table_standby_replicas=0 if kcfg.replication_factor <= 1 else 1,
            worker_redirect_stdouts=False,
            datadir=os.environ.get("STORELENS_FAUST_DATADIR", os.path.join("/tmp", f"{app_id(kcfg)}-data")),
        )
        self.app.storelens = self  # type: ignore[attr-defined]  (for callers holding only the app)
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        #: Deployment topic names (``kafka.topic_prefix`` + base name), by base name.
        self.topic_names = {t: topics.topic_name(t, kcfg.topic_prefix) for t in (
            topics.TRACKS, topics.CROSSINGS, topics.OCCUPANCY, topics.COUNTS, topics.DEAD_LETTER,
            topics.TRACK_ATTRIBUTES, topics.CUSTOMER_MATCHES)}
        self.tracks = self.app.topic(self.topic_names[topics.TRACKS], partitions=kcfg.partitions,
                                     allow_empty=True, **raw)
        self.track_attributes = self.app.topic(self.topic_names[topics.TRACK_ATTRIBUTES],
                                               partitions=kcfg.partitions, allow_empty=True, **raw)
        self.customer_matches = self.app.topic(self.topic_names[topics.CUSTOMER_MATCHES],
                                               partitions=kcfg.partitions, allow_empty=True, **raw)
        self.out = {base: self.app.topic(self.topic_names[base], **raw)
                    for base in (topics.CROSSINGS, topics.OCCUPANCY, topics.COUNTS, topics.DEAD_LETTER)}
        # keys raw (camera id, as in tracks), values JSON; the changelog is declared here only to
        # carry kafka.topic_prefix (same settings as faust's default changelog topic)
        changelog = self.app.topic(changelog_topic(kcfg), key_type=bytes, value_type=None, key_serializer="raw",
                                   value_serializer="json", partitions=kcfg.partitions, compacting=True,
                                   acks=False, internal=True, maxsize=131_072, allow_empty=True)
        self.table = self.app.Table(TABLE_NAME, default=None, partitions=kcfg.partitions,
                                    key_type=bytes, value_type=None, changelog_topic=changelog,
                                    help="Per-camera analytics state (AnalyticsStage.camera_state).")
        self.app.agent(self.tracks, name=f"{SERVICE}-tracks")(self._agent)
        self.app.agent(self.track_attributes, name=f"{SERVICE}-track-attributes")(self._attributes_agent)
        self.app.agent(self.customer_matches, name=f"{SERVICE}-customer-matches")(self._matches_agent)
        self.app.timer(1.0)(self._heartbeat)
        self.app.timer(BROKER_PING_S)(self._ping_broker)
        rt.add_check("broker", self.broker_ready)
        rt.add_check("tables", self.tables_ready)
        rt.add_check("storage", lambda: self._sink_ok["storage"] and bool(storage.ping()))
        if live is not None:
            rt.add_check("live", lambda: self._sink_ok["live"] and bool(live.ping()))

    # -- readiness -----------------------------------------------------------

    def tables_ready(self) -> bool:
        """Partitions assigned and the table recovered from its changelog (no rebalance in progress).

        Evaluated on the event loop (heartbeat timer) and cached: the probe's HTTP
        thread must not touch faust services, whose lazily bound event loop would
        then be one that never runs (a real hang seen when probing during start).
        """
        return self._tables_ready

    def _compute_tables_ready(self) -> bool:
        app = self.app
        if not app.agents or app.rebalancing or getattr(app, "in_recovery", False):
            return False
        recovery = app.tables.recovery
        return recovery.completed.is_set() and not recovery.in_recovery

    def broker_ready(self) -> bool:
        return self._broker_ok and time.monotonic() - self._broker_checked < 3 * BROKER_PING_S

    def _broker_ping_blocking(self) -> bool:
        from confluent_kafka.admin import AdminClient

        from storelens.kafka_bus import client_config

        if self._admin is None:
            self._admin = AdminClient(client_config(self.config.kafka))
        try:
            self._admin.list_topics(timeout=3.0)
            return True
        except Exception:  # noqa: BLE001 (any failure means "not reachable")
            return False

    async def _ping_broker(self) -> None:
        ok = await asyncio.get_running_loop().run_in_executor(None, self._broker_ping_blocking)
        self._broker_ok, self._broker_checked = ok, time.monotonic()

    async def _heartbeat(self) -> None:
        """Beat while the worker makes progress: a recovery/rebalance stuck for
        :data:`STUCK_NOT_READY_S` stops the beats, so ``/healthz`` fails and the
        orchestrator restarts the process."""
        now = time.monotonic()
        self._tables_ready = ready = self._compute_tables_ready()
        if ready:
            self._not_ready_since, self._stuck_logged = None, False
        elif self._not_ready_since is None:
            self._not_ready_since = now
        if self._not_ready_since is None or now - self._not_ready_since < STUCK_NOT_READY_S:
            self.rt.beat()
        elif not self._stuck_logged:
            self._stuck_logged = True
            log.error("no partitions recovered for too long; reporting unhealthy",
                      extra={"not_ready_s": round(now - self._not_ready_since)})
        if not self._broker_checked:
            await self._ping_broker()
        self._update_lag()

    def _update_lag(self) -> None:
        try:
            consumer = self.app.consumer
            for tp, next_offset in list(self._last_offset.items()):
                if tp not in consumer.assignment():
                    del self._last_offset[tp]
                    continue
                hw = consumer.highwater(tp)
                if hw is not None:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - next_offset))
        except Exception:  # noqa: BLE001 (metrics never break processing)
            log.debug("lag update failed", exc_info=True)

    # -- processing ----------------------------------------------------------

    async def _agent(self, stream) -> None:
        # Manual acks: faust's stream acks the current event in a ``finally`` even
        # when the agent is cancelled mid-event (SIGTERM, rebalance), and the
        # offset then committed on shutdown skipped a frame whose new state never
        # reached the table (a lost crossing after an analytics restart, seen in
        # tests/test_distributed.py::test_analytics_restart). An event is acked
        # here only once :meth:`handle` has finished, state flushed included; an
        # interrupted one stays uncommitted and is redelivered.
        #
        # Acked is not enough: faust also acks (and then commits) events it skips
        # while flow control is off (stopping, rebalancing). Each camera state
        # therefore records the next input offset of its partition, and the first
        # event after a jump in offsets first re-reads the gap (:meth:`_in_order`).
        await self._consume(stream, self.handle, in_order=self._in_order)

    async def _attributes_agent(self, stream) -> None:
        await self._consume(stream, self.handle_track_attributes)

    async def _matches_agent(self, stream) -> None:
        await self._consume(stream, self.handle_customer_match)

    async def _consume(self, stream, handle: Callable[[bytes, bytes, str], Any], in_order=None) -> None:
        """Feed every event to ``handle``; ack it only after ``handle`` returned (manual acks)."""
        stream = stream.noack()
        async for event in stream.events():
            msg = event.message
            if in_order is not None:
                await in_order(msg)
            t0 = time.perf_counter()
            self.metrics.messages_in.labels(msg.topic).inc()
            self._input = (msg.tp, msg.offset)
            try:
                await handle(event.key or b"", event.value if event.value is not None else b"", msg.topic)
            finally:
                self._input = None
            await stream.ack(event)
            self.metrics.seconds.labels(msg.topic).observe(time.perf_counter() - t0)
            self._last_offset[msg.tp] = msg.offset + 1
            try:
                hw = self.app.consumer.highwater(msg.tp)
                if hw is not None:
                    self.metrics.lag.labels(msg.topic, str(msg.partition)).set(max(0, hw - msg.offset - 1))
            except Exception:  # noqa: BLE001
                pass

    async def _mark_input(self) -> None:
        """Record progress on the input partition for a message that changes no camera state
        (a redelivery, a dead letter), so a restart does not re-read it."""
        if self._input is None or self._input[0].topic != self.topic_names[topics.TRACKS]:
            return
        tp, offset = self._input
        self.table[f"{INPUT_KEY}/{tp.partition}".encode()] = {
            INPUT_KEY: {"partition": tp.partition, "next_offset": offset + 1}}
        await self.app.producer.flush()

    def _resume_offset(self, partition: int) -> int | None:
        """Next ``tracks`` offset of ``partition`` that the table's camera states reflect (None: no record)."""
        best = None
        for value in list(self.table.values()):
            rec = value.get(INPUT_KEY) if isinstance(value, dict) else None
            if rec and int(rec.get("partition", -1)) == partition:
                best = max(best or 0, int(rec["next_offset"]))
        return best

    async def _in_order(self, msg) -> None:
        """Before a ``tracks`` event: handle first any events of its partition that were skipped.

        The expected offset of a partition is the one after the last event handled here
        (after an assignment: the offset the table's camera states record). faust can
        commit, and then resume after, events it never handed to the agent (skipped
        while flow control was off during a stop or rebalance; seen right after a
        restart as a jump from offset 71 to 75). Such a gap is read again with a
        private, group-less consumer and handled in order; idempotent sinks and the seq
        dedupe make re-handling an already reflected event harmless.
        """
        tp, gen = msg.tp, self.app.consumer_generation_id
        if self._gen_of.get(tp) != gen:
            self._gen_of[tp] = gen
            self._expected[tp] = self._resume_offset(tp.partition)
            log.info("first event after assignment", extra={"topic": tp.topic, "partition": tp.partition,
                                                            "offset": msg.offset, "expected": self._expected[tp],
                                                            "generation": gen})
        expected = self._expected.get(tp)
        if expected is not None and msg.offset > expected:
            log.warning("input gap: events were skipped; re-reading the gap",
                        extra={"topic": tp.topic, "partition": tp.partition, "expected": expected,
                               "offset": msg.offset})
            self.metrics.errors.labels("offset_rewind").inc()
            loop = asyncio.get_running_loop()
            missed = await loop.run_in_executor(None, self._read_range, tp.topic, tp.partition, expected, msg.offset)
            for key, value, offset in missed:
                self.metrics.messages_in.labels(tp.topic).inc()
                self._input = (tp, offset)
                try:
                    await self.handle(key or b"", value or b"", tp.topic)
                finally:
                    self._input = None
            log.info("gap re-read", extra={"topic": tp.topic, "partition": tp.partition, "messages": len(missed)})
        self._expected[tp] = max(expected or 0, msg.offset + 1)

    def _read_range(self, topic: str, partition: int, start: int, end: int) -> list[tuple[bytes, bytes, int]]:
        """Messages of ``topic``/``partition`` with ``start <= offset < end`` (blocking)."""
        from confluent_kafka import Consumer, TopicPartition

        from storelens.kafka_bus import client_config

        c = Consumer({**client_config(self.config.kafka), "group.id": f"{app_id(self.config.kafka)}-gap-reader",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        out: list[tuple[bytes, bytes, int]] = []
        try:
            c.assign([TopicPartition(topic, partition, start)])
            deadline = time.monotonic() + REWIND_TIMEOUT_S
            while time.monotonic() < deadline:
                rec = c.poll(0.5)
                if rec is None or rec.error():
                    pos = c.position([TopicPartition(topic, partition)])[0].offset
                    if pos >= end:  # the rest were not data records (e.g. transaction markers)
                        break
                    continue
                if rec.offset() >= end:
                    break
                out.append((rec.key(), rec.value(), rec.offset()))
                if rec.offset() == end - 1:
                    break
            else:
                log.error("could not read the whole gap in time", extra={"topic": topic, "partition": partition,
                                                                         "start": start, "end": end, "read": len(out)})
        finally:
            c.close()
        return out

    def _decode(self, cls, value: bytes):
        """``value`` as ``cls``; :class:`DecodeError` (or :class:`UnknownCamera`) for bad input."""
        msg = m.decode(cls, value)
        if msg.camera_id not in self.cameras:
            raise UnknownCamera(f"unknown camera {msg.camera_id!r}")
        return msg

    async def handle_track_attributes(self, key: bytes, value: bytes, topic: str) -> None:
        """Upsert one ``track-attributes`` summary (idempotent: by camera and track, newest ``last_seq`` wins)."""
        try:
            msg = self._decode(m.TrackAttributes, value)
        except DecodeError as exc:
            await self._dead_letter(topic, key, value, str(exc))
            return
        await self._store_faces(topic, key, value, lambda: self.storage.write_track_attributes([msg]))

    async def handle_customer_match(self, key: bytes, value: bytes, topic: str) -> None:
        """Upsert one ``customer-matches`` decision (idempotent: by its deterministic ``event_id``)."""
        try:
            msg = self._decode(m.CustomerMatch, value)
            if not msg.event_id or not msg.customer_id:
                raise DecodeError("customer match without event_id or customer_id")
        except DecodeError as exc:
            await self._dead_letter(topic, key, value, str(exc))
            return
        await self._store_faces(topic, key, value, lambda: self.storage.write_customer_matches([msg]))

    async def _store_faces(self, topic: str, key: bytes, value: bytes, write: Callable[[], object]) -> None:
        """``write`` through the sink thread, retried while the database is down; a message the
        database rejects as such (bad value, constraint) goes to the dead-letter topic instead."""
        try:
            await self._retry("storage", write, permanent=_rejected_errors())
        except _rejected_errors() as exc:
            await self._dead_letter(topic, key, value, f"cannot store message: {exc!r}", error="sink")

    async def handle(self, key: bytes, value: bytes, topic: str) -> None:
        """Process one ``tracks`` message (the agent calls this inside a faust event context)."""
        try:
            tf = self._decode(m.TrackedFrame, value)
        except DecodeError as exc:
            await self._dead_letter(topic, key, value, str(exc))
            return
        cam = tf.camera_id
        self._sync_state(cam)
        last = self.stage.last_seq.get(cam, -1)
        if last >= 0 and tf.seq > last + 1 and not tf.end_of_stream:
            # detect-track publishes every frame of a camera: a jump means frames were lost upstream or here
            self.metrics.errors.labels("seq_gap").inc()
            log.warning("sequence gap", extra={"camera": cam, "last_seq": last, "seq": tf.seq,
                                               "offset": None if self._input is None else self._input[1]})
        # Until the new state is in the table, the stage is ahead of it: if this frame is
        # interrupted (error, cancellation), the next one reloads the camera from the table.
        loaded = self._cache.pop(cam)
        try:
            out = self.stage.process(tf)
        except Exception as exc:  # noqa: BLE001 (e.g. NaN boxes): never poison the partition
            await self._dead_letter(topic, key, value, f"cannot process {m.TrackedFrame.DESCRIPTOR.full_name}: "
                                    f"{exc!r}", error="process")
            return
        if out.duplicate:
            self.metrics.duplicates.labels(topic).inc()
            self._cache[cam] = loaded
            await self._mark_input()
            return
        if not tf.end_of_stream:
            await self._write_sinks(tf, out)
            await self._publish(cam, out)
        state = self.stage.camera_state(cam)
        if self._input is not None:
            tp, offset = self._input
            state[INPUT_KEY] = {"partition": tp.partition, "next_offset": offset + 1}
        self.table[topics.camera_key(cam)] = state
        self._cache[cam] = state
        # The new state must be durable in the changelog before this message's
        # offset can be acknowledged and committed: otherwise a restart could
        # resume after this frame with the state from before it (a lost crossing,
        # seen in tests/test_distributed.py::test_analytics_restart).
        await self.app.producer.flush()

    def _sync_state(self, cam: str) -> None:
        """Load the camera's state from the table into the stage when it is not what the stage holds."""
        value = self.table.get(topics.camera_key(cam))
        if cam in self._cache and (value is self._cache[cam] or value == self._cache[cam]):
            self._cache[cam] = value
            return
        self.stage.ended.discard(cam)
        self.stage.load_camera_state(cam, value if value is not None else self._fresh.camera_state(cam))
        self._cache[cam] = value
        log.info("camera state loaded", extra={"camera": cam, "from_table": value is not None,
                                               "last_seq": self.stage.last_seq.get(cam, -1)})

    async def _write_sinks(self, tf: m.TrackedFrame, out: AnalyticsOutput) -> None:
        storage, live = self.storage, self.live
        occupancy = [out.occupancy] if out.occupancy is not None else []

        def write_storage() -> None:
            batch = getattr(storage, "write_batch", None)
            if batch is not None:
                batch(tracked_frames=[tf], crossings=out.crossings, occupancy_updates=occupancy,
                      count_windows=out.windows)
                return
            storage.write_tracked_frame(tf)
            if out.crossings:
                storage.write_crossings(out.crossings)
            for u in occupancy:
                storage.write_occupancy(u)
            for w in out.windows:
                storage.write_count_window(w)

        await self._retry("storage", write_storage)
        if live is not None:
            def write_live() -> None:
                for u in occupancy:
                    live.set_occupancy(u)
                live.touch_camera(tf.camera_id, tf.ts_ms, frames_seen=tf.seq + 1)

            await self._retry("live", write_live)

    async def _retry(self, sink: str, fn: Callable[[], T],
                     permanent: tuple[type[BaseException], ...] = ()) -> T:
        """Run a blocking sink call in the sink thread until it succeeds (backoff up to 5 s).

        Errors of a type in ``permanent`` (the message itself cannot be stored) are raised at once.
        """
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                result = await loop.run_in_executor(self._sink, fn)
                self._sink_ok[sink] = True
                return result
            except permanent:
                raise
            except Exception as exc:  # noqa: BLE001 (database/redis down: wait and retry)
                self._sink_ok[sink] = False
                self.metrics.errors.labels(sink).inc()
                log.warning("sink write failed; retrying", extra={"sink": sink, "error": str(exc),
                                                                   "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)

    async def _publish(self, cam: str, out: AnalyticsOutput) -> None:
        """Send the outputs and wait until the broker has them (before the state may advance)."""
        key = topics.camera_key(cam)
        msgs: list[tuple[str, bytes]] = [(topics.CROSSINGS, m.encode(ev.to_proto())) for ev in out.crossings]
        if out.occupancy is not None:
            msgs.append((topics.OCCUPANCY, m.encode(out.occupancy)))
        msgs += [(topics.COUNTS, m.encode(w)) for w in out.windows]
        futures = [await self.out[name].send(key=key, value=value) for name, value in msgs]
        if futures:
            await asyncio.gather(*futures)
        for base, _ in msgs:
            self.metrics.messages_out.labels(self.topic_names[base]).inc()

    async def _dead_letter(self, topic: str, key: bytes, value: bytes, reason: str, error: str = "decode") -> None:
        self.metrics.dead_letters.labels(topic).inc()
        self.metrics.errors.labels(error).inc()
        log.warning("dead letter", extra={"topic": topic, "key": key.decode("utf-8", "replace"), "reason": reason})
        dl = dead_letter(topic, key, value, reason, SERVICE)
        fut = await self.out[topics.DEAD_LETTER].send(key=key, value=m.encode(dl))
        await fut
        self.metrics.messages_out.labels(self.topic_names[topics.DEAD_LETTER]).inc()
        await self._mark_input()

    def close(self) -> None:
        self._sink.shutdown(wait=True)


def _rejected_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning "this message cannot be stored" (retrying cannot help), not "the database is down"."""
    import sqlite3

    errs: tuple[type[BaseException], ...] = (ValueError, TypeError, OverflowError, sqlite3.IntegrityError,
                                             sqlite3.DataError)
    try:
        import psycopg

        errs += (psycopg.DataError, psycopg.IntegrityError)
    except ImportError:  # pragma: no cover (psycopg is a dependency)
        pass
    return errs


def build_app(config: SiteConfig, storage, live, rt: ServiceRuntime, **kwargs: Any) -> faust.App:
    """The analytics faust app over ``storage`` (history) and ``live`` (Redis, optional).

    The :class:`AnalyticsApp` behind it is ``app.storelens``. Topics are not
    created here: call :func:`ensure_app_topics` first.
    """
    return AnalyticsApp(config, storage, live, rt, **kwargs).app


def ensure_app_topics(config: SiteConfig) -> list[str]:
    """Create the declared topics and the table's changelog (compacted) that do not exist yet (with the prefix)."""
    from storelens.kafka_bus import ensure_topics

    return ensure_topics(config.kafka, (*topics.TOPICS, changelog_spec(config.kafka)))


def run_worker(app: faust.App, rt: ServiceRuntime, loglevel: str = "INFO") -> int:
    """Run the faust worker in this thread until SIGTERM/SIGINT; return its exit code (0 when clean).

    faust installs its own SIGTERM/SIGINT handlers on the event loop (they
    replace those of :meth:`ServiceRuntime.start`); ours also mark the runtime
    as stopping, so ``/readyz`` turns 503 while faust commits and leaves the group.
    """
    def watchdog() -> None:
        """faust can hang in shutdown (e.g. stuck in recovery after the broker restarted)."""
        done.wait(SHUTDOWN_TIMEOUT_S)
        if not done.is_set():
            log.error("faust did not stop in time; exiting hard (uncommitted input is redelivered)",
                      extra={"timeout_s": SHUTDOWN_TIMEOUT_S})
            logging.shutdown()
            os._exit(1)

    done = threading.Event()

    class Worker(faust.Worker):
        def _stopping(self) -> None:
            if not rt.stopping.is_set():
                rt.stopping.set()
                threading.Thread(target=watchdog, name="shutdown-watchdog", daemon=True).start()

        def _on_sigterm(self) -> None:
            self._stopping()
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            self._stopping()
            super()._on_sigint()

    logging_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "storelens.logs.JsonFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": loglevel.upper(), "handlers": ["default"]},
    }
    worker = Worker(app, loglevel=loglevel.upper(), quiet=True, redirect_stdouts=False,
                    logging_config=logging_config, loop=app.loop)
    code: int = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        done.set()
        rt.stopping.set()
        analytics = getattr(app, "storelens", None)
        if analytics is not None:
            analytics.close()
    return code

