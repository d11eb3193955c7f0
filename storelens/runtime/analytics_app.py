"""The analytics service on Kafka: a faust-streaming application.

``tracks`` (``storelens.v1.TrackedFrame``, keyed by camera id) goes in;
line crossings, occupancy and per-window counts come out, to PostgreSQL
(history), Redis (live state) and the topics ``crossings``, ``occupancy``,
``counts``; undecodable messages, unknown cameras and messages whose ``message-type`` header names
another type than their topic carries go to ``dead-letter`` (every event, a re-read gap's too, goes
through the runner core with its record headers: :meth:`RunnerCore.check_type`; the outputs are sent
with their own ``message-type`` header).

The faces services' outputs are sunk here too: ``track-attributes``
(``TrackAttributes``, upserted by camera and track, an older ``last_seq``
never replacing a newer one) and ``customer-matches`` (``CustomerMatch``,
upserted by ``event_id``) go to PostgreSQL through the same sink thread and
retry path, each message acknowledged only after its write; they keep no
state, so redeliveries are harmless.

Site versions saved through ``/v1/site`` (``site-config``, compacted) are read without a consumer group, from
the topic's beginning at every start (:meth:`AnalyticsApp.follow_site`, the reader ingest and the other stages
use): the newest one is in force before the first frame, in every replica, and later ones are applied as
they come (a timer, every :data:`SITE_POLL_S`).

State: a faust :class:`~faust.Table` keyed by camera id holds
:meth:`AnalyticsStage.camera_state` (JSON: per-track line sides, occupancy,
open count windows, last processed seq and frame time). Its store is ``memory://``; the
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
   preceded by a re-read of the gap (a private consumer, in order; the whole gap, retried while the broker
   does not give it all);
5. an event whose handling fails (an output, a dead letter or the changelog the broker refused) stops the
   service with exit code 1 before any later event is handled (:meth:`AnalyticsApp._consume`): the restarted
   one handles it again from the saved state.

A crash or restart anywhere therefore either replays the frame against the old state
(same outputs, upserted again) or finds the new state and skips it.

A faust timer calls :meth:`AnalyticsApp.tick_at` every ``AnalyticsStage.tick_s``: the stage's
tick (``camera_down`` while no frame comes, the daily occupancy reset's 0 rows of cameras without a
frame since) through the same ``RunnerCore.tick`` as the embedded runner's loop; its alerts and rows go
to the sinks and the ``alerts`` and ``occupancy`` topics. Before it, and before every frame, the state of
every camera the table holds and the stage has not loaded yet (no frame of it since this process started)
is loaded, so a camera down since before a restart gets its 0 row too, and the store-wide alerts of the
first frame after a restart see every camera, not that frame's alone. The tick also resolves the open alerts of a
camera a site version removed while the service was down (or while its tables were recovering), and drops its
table entry (:meth:`AnalyticsApp._close_removed_cameras`). The tick changes only the store-level alert
state: after a tick whose alerts changed it (fired, resolved), once its outputs are written, it is saved in a table
entry of its own, ``_store/<store id>`` (:meth:`AnalyticsApp._save_store_state`), loaded before the next frame or
tick after a restart with the cameras' states (the newest copy wins), so an alert the tick fired while no frame came
resolves when the frames come back, once, under its id (a 0 row is written again, the same row: sinks upsert).

The sinks block (psycopg, redis-py); they run in one dedicated worker thread
(``run_in_executor``) so the event loop keeps heartbeating while a write
waits, and a failing sink is retried with backoff (the partition waits;
nothing is skipped), except the live state (Redis): behind a circuit breaker, its writes are skipped and counted
while Redis is down (:class:`~storelens.runtime.sinks.LiveSink`; the next update repairs it). A write under way
longer than :attr:`AnalyticsSettings.sink_stall_s` (a PostgreSQL lock) makes the service not ready; longer than the
runtime's
``stall_s``, not alive.

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
import signal
import ssl
import threading
import time
from typing import Annotated, Any, Callable, Literal, Mapping, Sequence, TypeVar

import faust
from faust.types import TP
from pydantic import Field, ValidationError

from storelens.contract import messages as m
from storelens.contract import topics
from storelens.config import KafkaConfig, SiteConfig
from storelens.config.base import Strict
from storelens.errors import ConfigError
from storelens.runtime.service import ServiceRuntime
from storelens.runtime.bus import BusMessage
from storelens.runtime.policy import Backoff, Breaker
from storelens.runtime.retention import RetentionPurge
from storelens.runtime.runner import TICK_TOPIC, Handled, RunnerCore, fit_output
from storelens.runtime.sinks import HistorySink, LiveSink
from storelens.runtime.webhooks import WebhookSink, close_webhooks, webhook_sinks
from storelens.stages import AnalyticsStage
from storelens.contract.topics import TopicSpec

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
#: Key prefix, in the table, of the store-level alert state saved after a tick (``_store/<store id>``; a camera
#: id has no ``/``): :meth:`AnalyticsApp._save_store_state`.
STORE_KEY_PREFIX = "_store/"
#: Seconds between broker pings of the readiness check.
BROKER_PING_S = 10.0
#: Seconds between checks whether a chore of the runner core is due (the retention purge).
CHORES_CHECK_S = 30.0
#: First and longest wait before Redis, once it failed, is asked again (a ping in a thread of its own); meanwhile the
#: live state's writes are skipped (:class:`~storelens.runtime.sinks.LiveSink`), as the api's reads are.
LIVE_FIRST_RETRY_S, LIVE_RETRY_S = 1.0, 5.0
#: ``storelens_errors_total`` reason of an input message whose handling failed in a way no error policy takes (an
#: output or the changelog the broker refused, a failed flush): the service stops, exit code 1
#: (:meth:`AnalyticsApp._consume`).
INPUT_FAILED = "input_failed"
#: ``storelens_errors_total`` reason (and dead letter reason) of an input message that failed for good.
HANDLE_FAILED = "handle_failed"


def retriable_failure(exc: BaseException) -> bool:
    """Whether an input message that failed may succeed when handled again (:meth:`AnalyticsApp._consume`): the
    broker or a store unreachable or failing (a Kafka error other than a refused record, ``BrokerError``, a
    connection error, a timeout, a store's error). ``False`` (a dead letter) for a record the broker refuses for
    good (too large, corrupt) and for anything else (a serialization error, a bug): handled again it fails again.

    Example:
        >>> from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
        >>> retriable_failure(KafkaConnectionError()), retriable_failure(MessageSizeTooLargeError())
        (True, False)
        >>> retriable_failure(KeyError("line"))
        False
    """
    from aiokafka import errors as kerr

    from storelens.runtime.kafka import BrokerError
    from storelens.runtime.policy import store_errors

    if isinstance(exc, (kerr.MessageSizeTooLargeError, kerr.RecordTooLargeError, kerr.RecordListTooLargeError,
                        kerr.CorruptRecordException)):
        return False
    return isinstance(exc, (kerr.KafkaError, BrokerError, OSError, TimeoutError, asyncio.TimeoutError,
                            *store_errors()))


#: Seconds between two reads of the site versions published on ``site-config`` (:meth:`AnalyticsApp.follow_site`).
SITE_POLL_S = 1.0
#: The environment variable of each :class:`AnalyticsSettings` field.
SETTINGS_ENV: dict[str, str] = {
    "stuck_s": "STORELENS_ANALYTICS_STUCK_S", "shutdown_timeout_s": "STORELENS_SHUTDOWN_TIMEOUT_S",
    "sink_stall_s": "STORELENS_ANALYTICS_SINK_STALL_S", "webhook_close_s": "STORELENS_WEBHOOK_CLOSE_S",
    "auto_offset_reset": "STORELENS_ANALYTICS_AUTO_OFFSET_RESET",
}
_Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class AnalyticsSettings(Strict):
    """The analytics service's own settings (not the site's), from its environment (:data:`SETTINGS_ENV`), read
    once at start (:meth:`from_env`).

    Example:
        >>> AnalyticsSettings.from_env({"STORELENS_ANALYTICS_SINK_STALL_S": "30"}).sink_stall_s
        30.0
        >>> AnalyticsSettings.from_env({"STORELENS_ANALYTICS_SINK_STALL_S": "0"})
        Traceback (most recent call last):
        ...
        storelens.errors.ConfigError: STORELENS_ANALYTICS_SINK_STALL_S (sink_stall_s): Input should be greater than 0
    """

    #: Not ready (rebalancing/recovering) this long while the loop turns: stop the heartbeat (``/healthz`` fails).
    stuck_s: _Seconds = 300.0
    #: After SIGTERM, exit hard if faust has not stopped within this many seconds.
    shutdown_timeout_s: _Seconds = 30.0
    #: A sink write (PostgreSQL, Redis) under way longer than this: not ready (its check, ``storage`` or ``live``,
    #: fails with a detail); one under way longer than the runtime's ``stall_s`` (120 s) also stops the heartbeat
    #: (``/healthz`` fails: a write hung on a lock or a dead connection is restarted). A store that is down is not
    #: this: its writes fail and are retried (not ready, still alive).
    sink_stall_s: _Seconds = 60.0
    #: At shutdown (:meth:`AnalyticsApp.close`), wait this long for the alert webhooks to deliver what is queued.
    webhook_close_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0
    #: Where a new consumer group starts.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "AnalyticsSettings":
        """The settings of ``environ`` (``os.environ``); an unset or empty variable: the default.

        Raises:
            ConfigError: a value that is not valid, naming its variable and field.
        """
        env = os.environ if environ is None else environ
        raw = {field: env[name].strip() for field, name in SETTINGS_ENV.items() if env.get(name, "").strip()}
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ConfigError("; ".join(f"{SETTINGS_ENV.get(str(err['loc'][0]), '?')} ({err['loc'][0]}): "
                                        f"{err['msg']}" for err in e.errors())) from None


#: ``max.message.bytes`` of the table's changelog: a camera's state (zones, dwell, heatmap grids) can pass 1 MiB.
CHANGELOG_MAX_BYTES = 8 * 1024**2
#: The changelog's ``segment.ms`` and ``min.cleanable.dirty.ratio`` (as ``ingest-state``'s): compaction never cleans
#: the open segment (Kafka's: up to 1 GiB or 7 days), which every start (the memory store recovers from offset 0)
#: would replay whole; a camera's state is written with every frame.
CHANGELOG_SEGMENT_MS = 3_600_000
CHANGELOG_DIRTY_RATIO = 0.1


def producer_max_bytes() -> int:
    """The faust producer's ``max_request_size``: the largest limit of the topics the service writes (its outputs,
    ``dead-letter`` and the changelog), so a message that fits its topic is not refused by the producer itself
    (faust's default is 1,000,000 bytes, under the 8 MiB of ``heatmaps``)."""
    bases = (*AnalyticsStage.outputs, topics.DEAD_LETTER)
    return max(CHANGELOG_MAX_BYTES, *(s.max_message_bytes for b in bases if (s := topics.spec(b)) is not None))


def app_id(cfg: KafkaConfig) -> str:
    """faust app id = consumer group id, e.g. ``storelens-analytics``."""
    return f"{cfg.group_prefix}-{SERVICE}"


def _changelog_base(cfg: KafkaConfig) -> str:
    return f"{app_id(cfg)}-{TABLE_NAME}-changelog"  # faust's own naming, <app id>-<table>-changelog


def changelog_topic(cfg: KafkaConfig) -> str:
    """The table's changelog topic, e.g. ``storelens-analytics-camera-state-changelog`` (with ``kafka.topic_prefix``)."""
    return topics.topic_name(_changelog_base(cfg), cfg.topic_prefix)


def changelog_spec(cfg: KafkaConfig) -> TopicSpec:
    """Compacted (its open segment too: :data:`CHANGELOG_SEGMENT_MS`), unbounded, co-partitioned with ``tracks``
    (``cfg.partitions``); unprefixed, as in :data:`TOPICS`."""
    return TopicSpec(_changelog_base(cfg), STATE_FORMAT, cfg.partitions, -1, compacted=True,
                     max_message_bytes=CHANGELOG_MAX_BYTES, compacted_segment_ms=CHANGELOG_SEGMENT_MS,
                     min_cleanable_dirty_ratio=CHANGELOG_DIRTY_RATIO)


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


def _record_headers(headers) -> tuple:
    """A consumed record's headers as ``(name, value)`` pairs (faust passes aiokafka's; a mapping is taken too)."""
    if not headers:
        return ()
    return tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)


class AnalyticsApp:
    """The faust app plus the per-process stage, sinks and health signals of the analytics service."""

    def __init__(self, config: SiteConfig, storage, live, rt: ServiceRuntime, *,
                 auto_offset_reset: str | None = None, loop: asyncio.AbstractEventLoop | None = None,
                 chores: Sequence[Any] = (), gallery: Any = None, limits: Mapping[str, int] | None = None,
                 sink_stall_s: float | None = None, settings: AnalyticsSettings | None = None) -> None:
        self.config, self.storage, self.live, self.rt = config, storage, live, rt
        #: The service's own settings (``None``: read from the environment now, once).
        self.settings = AnalyticsSettings.from_env() if settings is None else settings
        #: A sink write under way longer than this makes the service not ready (:attr:`AnalyticsSettings.sink_stall_s`).
        self.sink_stall_s = self.settings.sink_stall_s if sink_stall_s is None else sink_stall_s
        #: The failure that stopped the service (:meth:`_consume`); ``run_worker`` then exits with 1.
        self.failure: BaseException | None = None
        #: Stops the worker after such a failure (set by :func:`run_worker`); ``None``: the failure is raised.
        self.on_failure: Callable[[BaseException], None] | None = None
        self._sink_stuck_logged = False
        #: Base topic -> ``max.message.bytes`` of the deployment's output topics (:func:`build_app` reads them from
        #: the broker: :func:`~storelens.runtime.workers.topic_limits`); a topic not in it: its declared limit.
        self.limits = dict(limits or {})
        self.metrics = rt.metrics
        self.cameras = {c.id for c in config.cameras}
        self.stage = AnalyticsStage(config)
        self._fresh = AnalyticsStage(config)  # never processes: source of the initial state of a camera
        #: The table value the stage's camera state was last loaded from or saved as.
        self._cache: dict[str, dict | None] = {}
        self._sink = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="analytics-sink")
        # Redis behind a breaker: while it is down its writes are skipped and counted, the history, the outputs and
        # the alerts go on (one retry loop for every sink held every partition back while Redis was down)
        self.live_sink = LiveSink(live, Breaker(LIVE_RETRY_S, first_retry_s=LIVE_FIRST_RETRY_S, probe=live.ping,
                                                name="live state (Redis)", count_error=self._count_error),
                                  count_error=self._count_error) if live is not None else None
        sinks = ([HistorySink(storage)] + ([self.live_sink] if self.live_sink is not None else [])
                 + webhook_sinks(config, rt.metrics, storage))  # kept in the history's webhook_outbox
        #: The runner core every input goes through (decode, stage, error policy, sinks with retries).
        #: The scheduled retention purge of the history (privacy.retention): a chore of the core, run in
        #: the sink thread (no write of a message interleaves with it). Customer links whose customer
        #: left a gallery in the same database go too (checked in SQL). ``gallery`` (the gallery store, when there
        #: is one) is purged to faces.reid.retention_days first, whether the reid service runs or not.
        purge = RetentionPurge(storage, config, gallery=gallery)
        self.retention = purge if purge.history or purge.gallery is not None else None
        self.core = RunnerCore(self.stage, sinks, metrics=rt.metrics, should_stop=rt.stopping.is_set,
                               chores=([self.retention] if self.retention is not None else []) + list(chores))
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
        #: The cameras' states to save after a site version that came while the tables were not ready (recovery,
        #: rebalance): ``None``, or the cameras the versions removed (:meth:`_flush_site_states`).
        self._site_pending: set[str] | None = None
        #: The table key of the store-level alert state saved by ticks; the value last loaded from it or saved as;
        #: the step (a site version may rebuild it) and its :attr:`StoreAlerts.changes` then
        #: (:meth:`_save_store_state`).
        self._store_key = f"{STORE_KEY_PREFIX}{config.store.id}".encode()
        self._store_cache: dict | None = None
        self._store_saved: tuple[Any, int] = (self.stage.store_alerts, 0)
        kcfg = config.kafka
        reset = auto_offset_reset or self.settings.auto_offset_reset
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
            producer_max_request_size=producer_max_bytes(),
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
            *AnalyticsStage.inputs, *AnalyticsStage.outputs)}
        self.tracks = self.app.topic(self.topic_names[topics.TRACKS], partitions=kcfg.partitions,
                                     allow_empty=True, **raw)
        #: The other inputs (face history, camera snapshots): records for the sinks, no state. Not ``site-config``:
        #: read without a consumer group (:meth:`follow_site`).
        fixed = {t.name: t.partitions for t in topics.TOPICS if t.partitions_fixed}
        self.record_inputs = {base: self.app.topic(self.topic_names[base], partitions=fixed.get(base, kcfg.partitions),
                                                   allow_empty=True, **raw)
                              for base in AnalyticsStage.inputs if base not in (topics.TRACKS, topics.SITE_CONFIG)}
        #: The reader of ``site-config`` (a :class:`~storelens.runtime.kafka.TopicTail`), from :meth:`follow_site`.
        self._site: Any = None
        self.out = {base: self.app.topic(self.topic_names[base], **raw)
                    for base in (*AnalyticsStage.outputs, topics.DEAD_LETTER)}  # every analyzer's topics too
        # keys raw (camera id, as in tracks), values JSON; the changelog is declared here only to
        # carry kafka.topic_prefix (same settings as faust's default changelog topic)
        changelog = self.app.topic(changelog_topic(kcfg), key_type=bytes, value_type=None, key_serializer="raw",
                                   value_serializer="json", partitions=kcfg.partitions, compacting=True,
                                   acks=False, internal=True, maxsize=131_072, allow_empty=True)
        self.table = self.app.Table(TABLE_NAME, default=None, partitions=kcfg.partitions,
                                    key_type=bytes, value_type=None, changelog_topic=changelog,
                                    help="Per-camera analytics state (AnalyticsStage.camera_state).")
        self.app.agent(self.tracks, name=f"{SERVICE}-tracks")(self._agent)
        for base, topic in self.record_inputs.items():
            self.app.agent(topic, name=f"{SERVICE}-{base}")(self._records_agent)
        self.app.timer(1.0)(self._heartbeat)
        self.app.timer(BROKER_PING_S)(self._ping_broker)
        self.app.timer(CHORES_CHECK_S)(self._chores)
        self.app.timer(AnalyticsStage.tick_s)(self._tick)
        self.app.timer(SITE_POLL_S)(self._site_versions)
        rt.add_check("broker", self.broker_ready)
        rt.add_check("tables", self.tables_ready)
        rt.add_check("storage", lambda: self._sink_ready("storage", storage.ping))
        if live is not None:
            rt.add_check("live", lambda: self._sink_ready("live", live.ping))

    def _count_error(self, reason: str) -> None:
        self.core._error(reason)

    # -- readiness -----------------------------------------------------------

    def _sink_write_s(self, name: str | None = None) -> float | None:
        """Seconds the sink write under way (of sink ``name``, or any) has run, ``None`` when none is."""
        writing = self.core.writing
        if writing is None or (name is not None and writing[0] != name):
            return None
        return time.monotonic() - writing[1]

    def _sink_ready(self, name: str, ping: Callable[[], bool]) -> bool | tuple[bool, str]:
        """The readiness of sink ``name``: no write of it under way longer than :attr:`sink_stall_s` (the input
        waits behind it: a PostgreSQL lock, a hung connection), its last write succeeded, and the store answers
        ``ping`` (not asked while a write is under way: the history's ping waits for the write, and the probe
        hung with it). Redis while its writes are skipped: not ready, saying so."""
        age = self._sink_write_s(name)
        if age is not None and age > self.sink_stall_s:
            return False, (f"a {name} write has waited {age:.0f} s (over {self.sink_stall_s:g} s): a lock or a hung "
                           "connection; the input waits behind it")
        if age is not None:  # no ping while one of its writes is under way: it would wait behind it (the store's lock)
            return self.core.sink_ok[name]
        if name == "live" and self.live_sink is not None and self.live_sink.down:
            self.live_sink.poke()  # its probe when due: back to ready without waiting for a live write
            return False, "Redis unreachable: the live state's writes are skipped (history, outputs, alerts go on)"
        return self.core.sink_ok[name] and bool(ping())

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
        from storelens.runtime.kafka import BrokerProbe

        if self._admin is None:
            self._admin = BrokerProbe(self.config.kafka)
        return self._admin()

    async def _ping_broker(self) -> None:
        ok = await asyncio.get_running_loop().run_in_executor(None, self._broker_ping_blocking)
        self._broker_ok, self._broker_checked = ok, time.monotonic()

    async def _tick(self) -> None:
        await self.tick_at(int(time.time() * 1000))

    async def tick_at(self, now_ms: int) -> None:
        """The stage's tick at wall time ``now_ms`` (a faust timer, every ``AnalyticsStage.tick_s``; ``camera_down``
        while no frame comes): the same :meth:`RunnerCore.tick` as the embedded runner's loop; its records go to
        the sinks (sink thread), then its alerts to their topic."""
        if not self._tables_ready or self._halted():
            return
        await self._flush_site_states()
        await self._close_removed_cameras()
        self._sync_idle_cameras()
        h = self.core.tick(now_ms)
        if h is not None:
            h = await asyncio.get_running_loop().run_in_executor(self._sink, self.core.write_sinks, h)
            if h.stop is not None:
                return  # not written: not saved either (fired again, the same id, by the next process)
            await self._send(h.outputs)
        await self._save_store_state()

    def _halted(self) -> bool:
        """An input message failed (:attr:`failure`) or the service stops: the timers (tick, site versions, the
        pending site states) touch neither the stage nor the table any more. Before, the tick saved the store state
        with the failed frame's effects (a store alert it fired, whose publishing failed: after the restart it was
        never published)."""
        return self.failure is not None or self.rt.stopping.is_set()

    async def _save_store_state(self) -> None:
        """After a tick (its outputs written and sent): the store-level alert state, when alerts fired or resolved
        since it was last saved, goes to the table (entry ``_store/<store id>``, on its partition when assigned here:
        the store-wide rules need every camera on one worker) and the changelog is flushed. A frame's camera state
        carries that state too, but a tick changes no camera's: an alert the tick fired (``camera_down`` while no
        frame comes) was lost with the process, the first camera back never resolved it (its row ``firing`` for
        good) and the others fired it a second time under the same id."""
        if self._write_store_state(self._assigned()):
            await self.app.producer.flush()

    def _write_store_state(self, assigned: set[int]) -> bool:
        """Write the store-level alert state to its table entry when it changed since last saved (the caller flushes
        the changelog); whether it was written. Also after a site version (:meth:`_save_site_states`): the entry a
        tick saved must not keep an alert the version resolved (a state without store-wide rules is empty: no
        clock to tell it is newer). The entry is loaded first if not yet (:meth:`_sync_store`): never overwritten
        unread."""
        self._sync_store()
        sa = self.stage.store_alerts
        key = self._store_key
        partition = self._partition_of(key, {})
        if self._store_saved == (sa, sa.changes) or partition not in assigned:
            return False
        state = {"store": sa.state()}
        self.table.data[key] = state  # outside an event: the changelog partition is given (send_changelog)
        self.table.send_changelog(partition, key, state)
        self._store_cache, self._store_saved = state, (sa, sa.changes)
        return True

    def _sync_store(self) -> None:
        """Load the store-level alert state a tick saved (:meth:`_save_store_state`) when the table's value is not
        the one last loaded or saved here (after a restart or an assignment); the step keeps the newer of it and
        what it has (:meth:`StoreAlerts.load_state`)."""
        value = self.table.get(self._store_key)
        if not isinstance(value, dict) or value is self._store_cache or value == self._store_cache:
            return
        self._store_cache = value
        sa = self.stage.store_alerts
        sa.load_state(value.get("store") or {})
        self._store_saved = (sa, sa.changes)

    async def _send(self, outputs, source: BusMessage | None = None) -> None:
        """Send outputs (a frame's, the tick's, a site version's), each keyed by its own camera (a store-wide
        alert: the store id, or a ``camera_down``'s camera; the store's occupancy row: ``@store``), and wait until
        the broker has them: every message of an alert, fired by a frame of any camera or resolved by a tick or a
        version, goes to the same partition (in order for a consumer). An output over its topic's limit
        (:attr:`limits`) is a counted dead letter ``too_large`` instead, as in every runner (:func:`fit_output`);
        the other outputs go on. ``source``: the input they come from (logged with a dead letter)."""
        keys = [topics.camera_key(p.camera_id) for p in outputs.publish]
        cap = self.app.conf.producer_max_request_size
        sent = [fit_output(self.core, p.topic, self.topic_names[p.topic], key, p.message, self.limits, source, cap)
                for p, key in zip(outputs.publish, keys)]
        futures = [await self.out[o.topic].send(key=key, value=o.value, headers=m.type_headers(o.message))
                   for o, key in zip(sent, keys)]
        if futures:
            await asyncio.gather(*futures)
        for o in sent:
            self.metrics.messages_out.labels(self.topic_names[o.topic]).inc()

    def _assigned(self) -> set[int]:
        """The ``tracks`` partitions assigned to this worker now (their cameras' table entries are its to write)."""
        tracks = self.topic_names[topics.TRACKS]
        try:
            return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == tracks}
        except Exception:  # noqa: BLE001 (no consumer yet: nothing is assigned)
            return set()

    def _partition_of(self, key: bytes, value: dict) -> int:
        """The table partition of a camera's entry: the ``tracks`` partition its state records, else the one the
        producers' partitioner sends the camera's frames to."""
        from storelens.runtime.kafka import consistent_random

        rec = value.get(INPUT_KEY) if isinstance(value, dict) else None
        if rec and rec.get("partition") is not None:
            return int(rec["partition"])
        return consistent_random(key, list(range(self.config.kafka.partitions)), [])

    async def _save_site_states(self, removed: set[str]) -> None:
        """After a site version: the new state of every camera whose state the stage holds as the table has it
        (open alerts the version resolved, analyzers of changed rules, the store-wide alerts carried in every
        state) goes to the table, and the entries of the cameras the version removed are deleted; only on the
        partitions assigned here. Else a restart before the camera's next frame reloaded the old state and
        resolved its alerts again (a second ``resolved``, the webhook posted again), and a camera removed and
        added back came back with its old alerts open. A camera with a frame in flight is not in :attr:`_cache`:
        that frame saves its state, the version's changes with it. A removed camera's input record (``_input``)
        goes on in its partition's marker (``_input/<partition>``, :meth:`_mark_input`): a restart resumes after
        its last frame, not before it (a re-read gap)."""
        assigned, sent = self._assigned(), False
        for cam in sorted(self.stage.counters):
            key = topics.camera_key(cam)
            value = self.table.get(key)
            if value is None or cam not in self._cache or not (value is self._cache[cam] or value == self._cache[cam]):
                continue
            partition = self._partition_of(key, value)
            if partition not in assigned:
                continue
            state = self.stage.camera_state(cam)
            if INPUT_KEY in value:
                state[INPUT_KEY] = value[INPUT_KEY]
            self.table.data[key] = state  # outside an event: the changelog partition is given (send_changelog)
            self.table.send_changelog(partition, key, state)
            self._cache[cam], sent = state, True
        sent = self._write_store_state(assigned) or sent
        # only those whose alerts the version resolved (the stage held them); the others are closed from their
        # entry, then dropped, by _close_removed_cameras
        if self._drop_entries(removed & self.stage.removed_closed, assigned) or sent:
            await self.app.producer.flush()

    def _drop_entries(self, cameras: set[str], assigned: set[int]) -> bool:
        """Delete the table entries of ``cameras`` (removed from the site) on the partitions ``assigned`` here, each
        camera's input record (``_input``) kept in its partition's marker; whether anything was sent (the caller
        flushes the changelog). An entry saved under a newer site version than the one in force (another
        worker's, the camera added again) is kept, whatever this process resolved."""
        sent = False
        for cam in sorted(cameras):
            key = topics.camera_key(cam)
            value = self.table.get(key)
            partition = self._partition_of(key, value) if value is not None else None
            if partition not in assigned:
                continue
            if self.stage.saved_under_newer_version(value):
                continue  # the camera added again by a version this process has not seen yet: kept
            rec = value.get(INPUT_KEY) if isinstance(value, dict) else None
            if rec and rec.get("next_offset") is not None:
                mkey = f"{INPUT_KEY}/{partition}".encode()
                old = (self.table.get(mkey) or {}).get(INPUT_KEY) or {}
                if int(old.get("next_offset", -1)) < int(rec["next_offset"]):
                    marker = {INPUT_KEY: {"partition": partition, "next_offset": int(rec["next_offset"])}}
                    self.table.data[mkey] = marker
                    self.table.send_changelog(partition, mkey, marker)
            del self.table.data[key]
            self.table.send_changelog(partition, key, None, value_serializer="raw")
            self._cache.pop(cam, None)
            sent = True
        return sent

    async def _close_removed_cameras(self) -> None:
        """(each tick, the tables ready) The table entries of cameras the site in force no longer has whose state
        the stage never held: a site version removed the camera while the service was down (the version is in
        force from the start, before the table is recovered, so :meth:`AnalyticsStage.apply_site` had nothing of
        it to resolve, or the version came during a recovery or rebalance). Their open alerts are resolved
        (:meth:`AnalyticsStage.close_removed_camera`: history, webhooks, then ``alerts``), then their entries deleted
        (:meth:`_drop_entries`), as a removal while running does; only on the partitions assigned here. The entry of
        a camera whose alerts the version resolved (:attr:`AnalyticsStage.removed_closed`) that
        :meth:`_save_site_states` did not drop (its partition not assigned then) is dropped here, not resolved again;
        an entry saved under a newer site version than the one in force (another worker's, the camera added again)
        is kept, whatever this process resolved.
        A stop before the deletion resolves them again at the next start: the same messages (the sinks upsert, the
        webhooks' delivery key is the same)."""
        assigned, gone, closed = self._assigned(), set(), []
        markers = (f"{INPUT_KEY}/".encode(), STORE_KEY_PREFIX.encode())
        for key, value in list(self.table.items()):
            if not isinstance(key, bytes) or key.startswith(markers) or not isinstance(value, dict):
                continue
            cam = key.decode("utf-8", "replace")
            if cam in self.stage.counters or self._partition_of(key, value) not in assigned:
                continue
            if self.stage.saved_under_newer_version(value):
                continue  # the camera added again by a version this process has not seen yet: kept
            out = self.stage.close_removed_camera(cam, value)
            if out is None and cam not in self.stage.removed_closed:
                continue
            gone.add(cam)  # resolved now, or already (a version removed it while the stage held it): dropped
            if out is not None:
                closed.append(out)
        if not gone:
            return
        h = Handled(BusMessage(TICK_TOPIC, b"", b"", -1), TICK_TOPIC)
        h.outputs.records = [r for o in closed for r in o.records]
        h.outputs.publish = [p for o in closed for p in o.publish]
        if h.outputs.records:
            h = await asyncio.get_running_loop().run_in_executor(self._sink, self.core.write_sinks, h)
            if h.stop is not None:  # stopping while a store was down: the entries stay, resolved at the next start
                return
            await self._send(h.outputs)
        if self._drop_entries(gone, assigned):
            await self.app.producer.flush()
        log.info("state of cameras no longer in the site dropped, their open alerts resolved",
                 extra={"cameras": ",".join(sorted(gone)), "resolved": len(h.outputs.records)})

    async def _flush_site_states(self) -> None:
        """Save the cameras' states after the site versions that came while the tables were not ready
        (:meth:`_save_site_states`; the tick and the heartbeat call this once they are). Written during a recovery,
        they went to the changelog above the offset the recovery reads to, and the recovery then put the state of
        before the version back in memory (its alerts resolved a second time at the next frame)."""
        if self._site_pending is None or not self._tables_ready or self.app.rebalancing or self._halted():
            return
        removed, self._site_pending = self._site_pending - self.stage.cameras, None
        await self._save_site_states(removed)

    async def _chores(self) -> None:
        """Run the runner core's due chores (the retention purge) in the sink thread."""
        if self.core.chores:
            await asyncio.get_running_loop().run_in_executor(self._sink, self.core.run_chores)

    async def _heartbeat(self) -> None:
        """Beat while the worker makes progress: a recovery/rebalance stuck for
        :attr:`AnalyticsSettings.stuck_s`, or a sink write under way for longer than the runtime's ``stall_s`` (a
        lock, a hung connection: the loop turns, the input does not), stops the beats, so ``/healthz`` fails and the
        orchestrator restarts the process."""
        now = time.monotonic()
        self._tables_ready = ready = self._compute_tables_ready()
        if ready:
            self._not_ready_since, self._stuck_logged = None, False
        elif self._not_ready_since is None:
            self._not_ready_since = now
        write_s = self._sink_write_s()
        if write_s is not None and write_s > self.rt.stall_s:
            if not self._sink_stuck_logged:
                self._sink_stuck_logged = True
                self.metrics.errors.labels("sink_stuck").inc()
                log.error("a sink write has hung for too long; reporting unhealthy",
                          extra={"sink": (self.core.writing or ("?",))[0], "write_s": round(write_s)})
        elif self._not_ready_since is None or now - self._not_ready_since < self.settings.stuck_s:
            if write_s is None:
                self._sink_stuck_logged = False
            self.rt.beat()
        elif not self._stuck_logged:
            self._stuck_logged = True
            log.error("no partitions recovered for too long; reporting unhealthy",
                      extra={"not_ready_s": round(now - self._not_ready_since)})
        if not self._broker_checked:
            await self._ping_broker()
        self._update_lag()
        await self._flush_site_states()
        if self.live_sink is not None:
            self.live_sink.poke()  # Redis probed when due even with no frame coming (an idle site)
            if self.live_sink.pending and not self.live_sink.down:  # the updates skipped while Redis was down
                await asyncio.get_running_loop().run_in_executor(self._sink, self.live_sink.write, [])

    def _update_lag(self) -> None:
        """Set the lag gauge of the partitions read from; a revoked one's series is removed."""
        try:
            consumer = self.app.consumer
            for tp, next_offset in list(self._last_offset.items()):
                if tp not in consumer.assignment():
                    del self._last_offset[tp]
                    self.metrics.drop_lag(tp.topic, tp.partition)
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

    async def _records_agent(self, stream) -> None:
        await self._consume(stream, self.handle)

    async def _consume(self, stream, handle: Callable[..., Any], in_order=None) -> None:
        """Feed every event to ``handle``; ack it only after ``handle`` returned (manual acks).

        An event whose handling fails for good (:func:`retriable_failure` false: an output the broker refuses for
        its size, a bug) is a dead letter and the next one goes on (:meth:`_dead_letter_failed`). One that may
        succeed later (``handle`` or ``in_order`` raises a Kafka error that may pass, a store's error, a failed
        flush, a gap not read while stopping; any failure of a gap's message) is not acknowledged and nothing after
        it is handled by this process: :meth:`_stop_on_failure` stops the service (exit code 1) and the restarted
        one handles it again from the table's state (the camera's state and its ``_input`` record are those of
        before it). faust's supervisor would otherwise restart the agent, which went on with the *next* event: the
        failed frame's new state never saved, the frames after it saved with later ones, so after a restart it was
        skipped as a duplicate and its crossings and alerts were never published."""
        stream = stream.noack()
        async for event in stream.events():
            msg = event.message
            gap = True  # a failure in ``in_order`` is a gap message's: stop (this one is not the failed one)
            try:
                if in_order is not None:
                    await in_order(msg)
                gap = False
                t0 = time.perf_counter()
                self.metrics.messages_in.labels(msg.topic).inc()
                self._input = (msg.tp, msg.offset)
                try:
                    await handle(event.key or b"", event.value if event.value is not None else b"", msg.topic,
                                 _record_headers(msg.headers))
                finally:
                    self._input = None
            except Exception as exc:  # noqa: BLE001 (not a cancellation: those end the agent as before)
                if gap or self.failure is not None or self.rt.stopping.is_set() or retriable_failure(exc):
                    await self._stop_on_failure(msg, exc)
                    return
                try:  # this message can never be handled: a dead letter, and the next one
                    await self._dead_letter_failed(event.key or b"", event.value or b"", msg, exc)
                except Exception as exc2:  # noqa: BLE001 (the dead letter refused too: stop)
                    await self._stop_on_failure(msg, exc2)
                    return
            await stream.ack(event)
            self.metrics.seconds.labels(msg.topic).observe(time.perf_counter() - t0)
            self._last_offset[msg.tp] = msg.offset + 1
            try:
                hw = self.app.consumer.highwater(msg.tp)
                if hw is not None:
                    self.metrics.lag.labels(msg.topic, str(msg.partition)).set(max(0, hw - msg.offset - 1))
            except Exception:  # noqa: BLE001
                pass

    async def _dead_letter_failed(self, key: bytes, value: bytes, msg, exc: BaseException) -> None:
        """An input message whose handling failed for good (:func:`retriable_failure` false: an output the broker
        refuses for its size, a bug): a counted dead letter (reason ``handle_failed``, payload cut to fit), the
        input marked handled, and the camera's state loaded again from the table before its next frame (the failed
        frame's partial effects dropped; its history rows, written before, stay). The error policy's "this record
        cannot be taken": before, every failure stopped the service, which handled the same message again after
        each restart (a crash loop of every camera)."""
        from storelens.runtime.runner import dead_letter

        self.metrics.errors.labels(HANDLE_FAILED).inc()
        log.error("message failed for good: dead letter, going on", exc_info=exc,
                  extra={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset, "error": repr(exc)})
        if topics.base_name(msg.topic, self.config.kafka.topic_prefix) == topics.TRACKS:
            try:
                cam = m.decode(m.TrackedFrame, value).camera_id
            except Exception:  # noqa: BLE001 (not decoded: no camera state changed)
                cam = None
            if cam is not None:
                self._cache.pop(cam, None)  # the next frame reloads it from the table (:meth:`_sync_state`)
        self._store_cache = None  # the store-level state too (:meth:`_sync_store`)
        dl = dead_letter(msg.topic, key, value, f"{HANDLE_FAILED}: {exc!r}"[:1000], SERVICE)
        await self._send_dead_letter(key, dl, (msg.tp, msg.offset))

    async def _stop_on_failure(self, msg, exc: BaseException) -> None:
        """An input message failed (:meth:`_consume`): log and count it, stop the service (exit code 1, the message
        not acknowledged) and wait here, handling nothing more, until the stop cancels the agent. While the service
        is stopping anyway (a store that was down, SIGTERM) it is only logged: redelivered after the restart."""
        where = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset, "error": repr(exc)}
        if self.rt.stopping.is_set() and self.failure is None:
            log.info("message not finished while stopping: not acknowledged, handled after the restart", extra=where)
        else:
            self.metrics.errors.labels(INPUT_FAILED).inc()
            log.error("message failed: stopping the service, exit code 1 (not acknowledged: the restarted service "
                      "handles it again from the saved state)", exc_info=exc, extra=where)
            if self.failure is None:
                self.failure = exc
                if self.on_failure is None:  # no worker to stop (the app driven by hand): the caller gets it
                    raise exc
                try:
                    self.on_failure(exc)
                except Exception as stop_exc:  # noqa: BLE001 (e.g. faust/mode renamed a private attribute)
                    log.error("cannot stop the worker as on SIGTERM: sending SIGTERM to this process",
                              exc_info=stop_exc)
                    os.kill(os.getpid(), signal.SIGTERM)
        try:  # given up, not acknowledged: faust's stop must not wait for its ack (it waited until the hard exit)
            unacked = self.app.consumer._unacked_messages
        except AttributeError:
            log.warning("faust's consumer has no _unacked_messages (renamed in this faust release?): the stop may "
                        "wait for this message's ack until the hard exit")
            unacked = None
        except Exception:  # noqa: BLE001 (no consumer: nothing waits)
            unacked = None
        if unacked is not None:
            unacked.discard(msg)
        await asyncio.Event().wait()  # cancelled by the stop; never returns to faust's supervisor (the next event)

    async def _mark_input(self, source: tuple[Any, int] | None) -> None:
        """Record progress on the input partition for a message that changes no camera state
        (a redelivery, a dead letter), so a restart does not re-read it (``source``: its ``(tp, offset)``)."""
        if source is None or source[0].topic != self.topic_names[topics.TRACKS]:
            return
        tp, offset = source
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
            missed = await self._read_gap(tp, expected, msg.offset)
            for gap in missed:
                self.metrics.messages_in.labels(tp.topic).inc()
                self._input = (tp, gap.offset)
                try:
                    await self.handle(gap.key, gap.value, tp.topic, gap.headers)
                finally:
                    self._input = None
            log.info("gap re-read", extra={"topic": tp.topic, "partition": tp.partition, "messages": len(missed)})
        self._expected[tp] = max(expected or 0, msg.offset + 1)

    async def _read_gap(self, tp, start: int, end: int) -> list[BusMessage]:
        """The messages of ``tp`` with ``start <= offset < end``, the whole range: a read that fails or does not get
        it all within :data:`REWIND_TIMEOUT_S` (the broker away) is counted (``errors{reason="gap_reread"}``) and
        tried again with backoff, the partition waiting, until it succeeds. Stopping meanwhile, the event that
        found the gap is given up (not acknowledged, its ``_expected`` offset not advanced): counted by messages in
        ``errors{reason="gap_unread"}`` and raised; the restarted service finds the gap again from the table's
        ``_input`` records. Before, a failed or partial read was taken as the whole gap and the rest lost."""
        backoff, loop = Backoff(), asyncio.get_running_loop()
        while True:
            try:
                return await loop.run_in_executor(None, self._read_range, tp.topic, tp.partition, start, end)
            except Exception as exc:  # noqa: BLE001 (BrokerError, a client error: tried again)
                self.metrics.errors.labels("gap_reread").inc()
                where = {"topic": tp.topic, "partition": tp.partition, "start": start, "end": end,
                         "error": repr(exc)}
                if self.rt.stopping.is_set():
                    self.metrics.errors.labels("gap_unread").inc(end - start)
                    log.error("input gap not read, stopping: read again after the restart", extra=where)
                    raise
                delay = backoff.next_delay()
                log.warning("cannot read the input gap; retrying", extra={**where, "retry_in_s": delay})
                await asyncio.sleep(delay)

    def follow_site(self) -> m.SiteUpdate | None:
        """Put the newest site version on ``site-config`` in force now (before the worker starts), in :attr:`stage`
        and in the source of new cameras' state; the later ones come through :meth:`_site_versions`. Returns it.

        The topic is read from its beginning at every start without a consumer group
        (:func:`~storelens.runtime.workers.site_tail`, as ingest, detect-track, attributes and reid do), so every
        replica sees every version. Read by the app's consumer group, a restarted service resumed after the
        committed offset and never saw the newest version again (an API-added camera's tracks were dead letters,
        a moved line went back), and of two replicas only the one assigned the topic's one partition had it.
        """
        from storelens.runtime.workers import site_tail

        self._site, newest = site_tail(self.config, self.stage)
        if newest is not None and self.stage.site_version == newest.version:
            self._fresh.apply_site(newest)
            log.info("site version applied", extra={"version": newest.version, "actor": newest.actor,
                                                    "at_start": True})
        return newest

    async def _site_versions(self) -> None:
        """(timer) The site versions published since the last call, each handled like an input message."""
        if self._site is None or self._halted():
            return
        msgs = await asyncio.get_running_loop().run_in_executor(None, self._poll_site)
        for msg in msgs:
            self.metrics.messages_in.labels(msg.topic).inc()
            await self.handle(msg.key, msg.value, msg.topic, msg.headers, source=(TP(msg.topic, msg.partition),
                                                                                  msg.offset))

    def _poll_site(self) -> list[BusMessage]:
        out = []
        while (msg := self._site.poll(0)) is not None:
            out.append(msg)
        return out

    def _read_range(self, topic: str, partition: int, start: int, end: int) -> list[BusMessage]:
        """Messages of ``topic``/``partition`` with ``start <= offset < end`` (blocking)."""
        from storelens.runtime.kafka import read_range

        return read_range(self.config.kafka, topic, partition, start, end, f"{SERVICE}-gap-reader",
                          REWIND_TIMEOUT_S)

    async def handle(self, key: bytes, value: bytes, topic: str, headers: tuple = (),
                     source: tuple[Any, int] | None = None) -> None:
        """Process one message of any input (the agents call this inside a faust event context; the site versions
        come from :meth:`_site_versions`).

        The runner core checks its ``message-type`` header (``headers``: the record's; another type than the
        topic's is a dead letter, none is decoded as before), decodes it and runs the stage (camera state loaded
        from the table first); the sinks are written in the sink thread (retried while a store
        is down); the outputs are sent and awaited; then the camera's new state goes to
        the table and the changelog is flushed, before the event may be acknowledged.

        ``source``: the message's ``(tp, offset)``; default: the event being handled (:attr:`_input`, read before
        the first ``await``: another agent's event may set it meanwhile).
        """
        source = source if source is not None else self._input
        tp, offset = source if source is not None else (None, -1)
        msg = BusMessage(topic, key, value, offset, tp.partition if tp is not None else 0, headers)
        base = topics.base_name(topic, self.config.kafka.topic_prefix)
        loaded: list = []

        cameras_before = set(self.stage.cameras)

        def before(decoded) -> None:
            if base == topics.TRACKS:
                loaded.append(self._before_frame(decoded))
            elif base == topics.SITE_CONFIG and self._tables_ready:
                self._sync_idle_cameras()  # the version resolves the alerts of every camera the table holds

        h = self.core.process(msg, base, before)
        if h.stop is not None:
            raise h.stop
        if h.dead_letter is None and h.outputs.records:
            h = await asyncio.get_running_loop().run_in_executor(self._sink, self.core.write_sinks, h)
            if h.stop is not None:  # stopping while a store was down: not acknowledged, redelivered
                raise h.stop
        if h.dead_letter is not None:
            await self._send_dead_letter(key, h.dead_letter, source)
            return
        if base == topics.SITE_CONFIG and h.dead_letter is None:
            # a site edit (/v1/site): new cameras start from the new site's empty state
            self._fresh.apply_site(h.value)
            log.info("site version applied", extra={"version": h.value.version, "actor": h.value.actor})
            await self._send(h.outputs, msg)  # the alerts it resolved (written to the sinks above)
            if h.outputs.info.get("applied"):  # saved now, or once the tables are ready (not during a recovery)
                self._site_pending = (self._site_pending or set()) | (cameras_before - self.stage.cameras)
                await self._flush_site_states()
        if base != topics.TRACKS:
            return
        cam = h.value.camera_id
        if h.outputs.duplicate:
            if cam in self.stage.counters:  # not a camera a site version removed (it has no state)
                self._cache[cam] = loaded[0]
            await self._mark_input(source)
            return
        await self._send(h.outputs, msg)
        if cam not in self.stage.counters:
            # a site version removed the camera while this frame was written (its table entry is gone): nothing to
            # save, its offset is recorded
            await self._mark_input(source)
            return
        state = self.stage.camera_state(cam)
        if tp is not None:
            state[INPUT_KEY] = {"partition": tp.partition, "next_offset": offset + 1}
        self.table[topics.camera_key(cam)] = state
        self._cache[cam] = state
        # The new state must be durable in the changelog before this message's
        # offset can be acknowledged and committed: otherwise a restart could
        # resume after this frame with the state from before it (a lost crossing,
        # seen in tests/test_distributed.py::test_analytics_restart).
        await self.app.producer.flush()

    def _before_frame(self, tf: m.TrackedFrame) -> dict | None:
        """Load the frame's camera state from the table; the table value it came from.

        Until the new state is in the table, the stage is ahead of it: if this frame is
        interrupted (error, cancellation), the next one reloads the camera from the table.
        """
        cam = tf.camera_id
        self._sync_state(cam)
        self._sync_entrance_cameras(cam)
        self._sync_idle_cameras()  # the store-wide alerts see every camera from the first frame after an assignment
        last = self.stage.last_seq.get(cam, -1)
        if last >= 0 and tf.seq > last + 1 and not tf.end_of_stream:
            # detect-track publishes every frame of a camera: a jump means frames were lost upstream or here
            self.metrics.errors.labels("seq_gap").inc()
            log.warning("sequence gap", extra={"camera": cam, "last_seq": last, "seq": tf.seq,
                                               "offset": None if self._input is None else self._input[1]})
        return self._cache.pop(cam, None)

    def _sync_state(self, cam: str) -> None:
        """Load the camera's state from the table into the stage when it is not what the stage holds (not of a
        camera a site version removed: its frames still in flight are skipped as duplicates by the stage)."""
        if cam not in self.stage.counters:
            self._cache.pop(cam, None)
            return
        value = self.table.get(topics.camera_key(cam))
        if cam in self._cache and (value is self._cache[cam] or value == self._cache[cam]):
            self._cache[cam] = value
            return
        self.stage.ended.discard(cam)
        self.stage.load_camera_state(cam, value if value is not None else self._fresh.camera_state(cam))
        self._cache[cam] = value
        log.info("camera state loaded", extra={"camera": cam, "from_table": value is not None,
                                               "last_seq": self.stage.last_seq.get(cam, -1)})

    def _sync_entrance_cameras(self, cam: str) -> None:
        """Load the state of every other entrance camera (``store.entrance_lines``, else every camera with a line:
        :func:`~storelens.stages.analytics.store_lines`) that the stage does not hold
        yet and the table has: after a restart the store's occupancy row (``@store``, written by the stage from the
        cameras whose state it has) is then right from the first frame with crossings of any camera, with the
        other cameras' persisted counts (a camera that is down would otherwise count 0 in it). The row's rule
        stays the stage's (:meth:`AnalyticsStage.store_totals`). A camera the table has no state of (no frame of
        it handled yet, or its partition on another worker) is not loaded: it counts 0 until its first frame."""
        for other, _line in self.stage.entrance_lines:
            if (other != cam and other not in self._cache and other in self.stage.counters
                    and self.table.get(topics.camera_key(other)) is not None):
                self._sync_state(other)

    def _sync_idle_cameras(self) -> None:
        """Load the state of every camera the table holds that the stage never loaded (no frame of it handled by
        this process: a camera down since before a restart), before the tick (its reset rows) and before every
        frame: the store-wide alerts (``store_occupancy``, ``camera_down``) of the first frame after a restart or
        an assignment then see every camera's persisted counts and frame times, not the frame's camera alone (a
        firing ``store_occupancy`` alert would resolve falsely and fire again under a new id). A camera the stage
        has loaded is left alone: its state may be ahead of the table (a frame whose sinks are being written). The
        store-level alert state a tick saved is loaded too (:meth:`_sync_store`)."""
        self._sync_store()
        for cam in list(self.stage.counters):
            if (cam not in self.stage.last_seq and cam not in self._cache
                    and self.table.get(topics.camera_key(cam)) is not None):
                self._sync_state(cam)

    async def _send_dead_letter(self, key: bytes, dl: m.DeadLetter, source: tuple[Any, int] | None) -> None:
        from storelens.runtime.runner import cut_payload, fitting_dead_letter

        dl = fitting_dead_letter(dl)  # never refused itself: its payload cut to fit the declared limit,
        limit = self.limits.get(topics.DEAD_LETTER)  # and the broker's when lower (read at the start)
        if limit is not None and not topics.fits(limit, dl.key, m.encode(dl), m.type_headers(dl)):
            payload, note = cut_payload(dl.payload)
            dl = m.DeadLetter(source_topic=dl.source_topic, key=dl.key, payload=payload,
                              reason=f"{dl.reason}; {note}", service=dl.service, ts_ms=dl.ts_ms)
        fut = await self.out[topics.DEAD_LETTER].send(key=key, value=m.encode(dl), headers=m.type_headers(dl))
        await fut
        self.metrics.messages_out.labels(self.topic_names[topics.DEAD_LETTER]).inc()
        await self._mark_input(source)

    def close(self) -> None:
        """Finish the sink thread's write, then give the alert webhooks up to
        :attr:`AnalyticsSettings.webhook_close_s` to deliver
        what is queued or waiting to retry (the input of those alerts is already committed); what is left stays in
        the history's ``webhook_outbox`` and is delivered after the next start (by this worker or another)."""
        self._sink.shutdown(wait=True)
        if self._site is not None:
            site, self._site = self._site, None
            site.close()
        close_webhooks([s for s in self.core.sinks if isinstance(s, WebhookSink)], self.settings.webhook_close_s)


def build_app(config: SiteConfig, storage, live, rt: ServiceRuntime, **kwargs: Any) -> faust.App:
    """The analytics faust app over ``storage`` (history) and ``live`` (Redis, optional), the newest site version
    of ``site-config`` in force (:meth:`AnalyticsApp.follow_site`).

    The :class:`AnalyticsApp` behind it is ``app.storelens``. Topics are not
    created here: call :func:`ensure_app_topics` first.
    """
    if "limits" not in kwargs:  # the output topics' max.message.bytes on the broker (lower than declared on a
        from storelens.runtime.workers import topic_limits  # topic made elsewhere), read once at the start

        kwargs["limits"] = topic_limits(config.kafka, [*AnalyticsStage.outputs, topics.DEAD_LETTER])
    analytics = AnalyticsApp(config, storage, live, rt, **kwargs)
    analytics.follow_site()
    return analytics.app


def ensure_app_topics(config: SiteConfig) -> list[str]:
    """Create the declared topics and the table's changelog (compacted) that do not exist yet (with the prefix).

    An existing topic keeps its settings but those :func:`~storelens.runtime.kafka.bound_segments` brings to its
    spec (a too long ``segment.ms``; a compacted topic's ``segment.ms`` and ``min.cleanable.dirty.ratio``, e.g.
    ``ingest-state``'s and the changelog's, created by an older release: Kafka's 7 days, 0.5), and the changelog's
    ``max.message.bytes``, raised to :data:`CHANGELOG_MAX_BYTES` when lower (Kafka's 1 MiB); a broker that refuses
    (no ``AlterConfigs`` permission) is logged: set them by hand then."""
    from storelens.runtime.kafka import ensure_topics

    return ensure_topics(config.kafka, (*topics.TOPICS, changelog_spec(config.kafka)),
                         raise_max_message_bytes=[_changelog_base(config.kafka)])


def run_worker(app: faust.App, rt: ServiceRuntime, loglevel: str = "INFO") -> int:
    """Run the faust worker in this thread until SIGTERM/SIGINT; return its exit code (0 when clean).

    faust installs its own SIGTERM/SIGINT handlers on the event loop (they
    replace those of :meth:`ServiceRuntime.start`); ours also mark the runtime
    as stopping, so ``/readyz`` turns 503 while faust commits and leaves the group.
    An input message that failed (:meth:`AnalyticsApp._consume`) stops the worker the same way; the exit code is
    then 1 (the orchestrator restarts the process, which handles that message again).
    """
    shutdown_timeout_s = app.storelens.settings.shutdown_timeout_s  # type: ignore[attr-defined]

    def watchdog() -> None:
        """faust can hang in shutdown (e.g. stuck in recovery after the broker restarted)."""
        done.wait(shutdown_timeout_s)
        if not done.is_set():
            log.error("faust did not stop in time; exiting hard (uncommitted input is redelivered)",
                      extra={"timeout_s": shutdown_timeout_s})
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

        def stop_failed(self, exc: BaseException) -> None:
            """Stop as after SIGTERM (commit what was acknowledged, leave the group), from the event loop."""
            self._stopping()
            if not self._signal_stop_time:
                self._signal_stop_time = self.loop.time()
                self._signal_stop_future = asyncio.ensure_future(self._stop_failed(), loop=self.loop)

        async def _stop_failed(self) -> None:
            await self.stop()
            if self._starting_fut is not None and not self._starting_fut.done():
                self._starting_fut.cancel()

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
    analytics = getattr(app, "storelens", None)
    if analytics is not None:
        analytics.on_failure = worker.stop_failed
    code: int = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        done.set()
        rt.stopping.set()
        if analytics is not None:
            analytics.close()
    if analytics is not None and analytics.failure is not None and code == 0:
        code = 1
    return code

