"""Kafka transport of the distributed mode (aiokafka, the client faust-streaming runs on too).

Same contract as the in-process bus: protobuf bytes keyed by camera id, on
the topics declared in :mod:`storelens.contract.topics`, with the record header
``message-type`` naming the message's protobuf type (``headers`` of :meth:`KafkaBus.publish`,
:attr:`BusMessage.headers` of what is read). Delivery is at-least-once:

* consumers never auto-commit; a service marks a message done only after
  its outputs were produced, and :meth:`KafkaConsumer.commit` flushes the
  producer first, then commits exactly the offsets of the done messages, so
  an offset is committed only once everything the message caused is on the broker;
* producers are idempotent (``enable_idempotence``), so broker retries do
  not duplicate; a redelivery after a crash reproduces the same messages
  (deterministic ids), and every sink upserts.

The API is synchronous (the services call it from worker threads). Every
aiokafka client of a process lives on one private asyncio event loop run by
a daemon thread (``storelens-kafka-io``); each blocking call submits a
coroutine with :func:`asyncio.run_coroutine_threadsafe` and waits for it.

Rebalances: aiokafka runs a :class:`~aiokafka.abc.ConsumerRebalanceListener`
on the event loop, but the ``on_assign``/``on_revoke`` hooks of a worker are
blocking (detect-track's ``on_revoke`` publishes a snapshot, flushes the
producer and commits, all of which are calls into that same loop). So the
listener only enqueues the event and awaits a future; the next
:meth:`KafkaConsumer.poll` (which returns early when an event is queued) runs
the hook on the worker's own thread, commits what is done, and resolves the
future. aiokafka completes the rebalance only after that, so offsets are
committed before a revoked partition is handed to another member.

Assignment is eager (aiokafka's round-robin assignor): on a rebalance every
member's partitions are revoked and then assigned anew, possibly the same
ones. librdkafka's cooperative-sticky assignor (used before) only revoked
the partitions that moved. With eager assignment every member pauses while
the group rebalances (scaling out stops all replicas briefly, not only the
ones that give partitions away), and the hooks see every partition revoked
and re-assigned: one snapshot per partition on detect-track, restored from
memory right after (the hooks are idempotent). aiokafka has no cooperative
protocol; its sticky assignor would still revoke everything first.

Producers partition by librdkafka's CRC-32 of the key (:func:`consistent_random`), not
aiokafka's murmur2, so a camera's messages stay on the partitions they used before.

Example:
    >>> bus = KafkaBus(KafkaConfig(), client_id="ingest")            # doctest: +SKIP
    >>> bus.publish("frames", b"cam-1", m.encode(frame), headers=m.type_headers(frame))  # doctest: +SKIP
    >>> bus.flush()                                                      # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import dataclasses
import logging
import os
import random
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Sequence

import aiokafka.codec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from storelens.runtime.bus import BusMessage
from storelens.config import KafkaConfig
from storelens.errors import StoreLensError
from storelens.contract.topics import TOPICS, TopicSpec, segment_ms, topic_name

log = logging.getLogger(__name__)

#: The largest message any declared topic accepts (the producer's request size, a fetch's total size).
MAX_MESSAGE_BYTES = max(s.max_message_bytes for s in TOPICS)
#: Bytes fetched per partition and request: a frame's limit (8 MiB; the broker still returns a larger
#: snapshot whole, KIP-74). With 64 MiB aiokafka consumed 100 KB frames ~35% slower.
PARTITION_FETCH_BYTES = 8 * 1024**2
#: Longest a fetch request may wait on the broker for data (aiokafka's default: 500 ms). Bounds a stall of
#: aiokafka's fetcher: it has one fetch in flight per broker, and a partition whose prefetched records were
#: not consumed within 100 ms (``prefetch_backoff``, not configurable) is left out of the next fetch while the
#: others (e.g. idle partitions of ``frames``) are long-polled; the busy partition is then fetched again only
#: after that long poll ends, so a consumer behind by more than 100 ms waited up to 500 ms per batch.
FETCH_MAX_WAIT_MS = 50
#: Seconds a client keeps trying to reach the broker at start before :class:`BrokerError`.
CONNECT_TIMEOUT_S = 30.0
#: How long :meth:`KafkaBus.flush` waits for the broker to take what is pending, by default, before
#: :class:`UndeliveredError`. A broker restart took 79 s on a loaded 2-core machine, so the minute it
#: was before ended detect-track mid-restart; kept under the consumers' ``max_poll_interval_ms``
#: (300 s), so a worker waiting in a flush stays in its group.
FLUSH_WAIT_S = 240.0
#: Once the service is stopping (SIGTERM), its flushes and publishes wait at most this long IN ALL (one deadline for
#: the whole stop, :meth:`KafkaBus.stop_left`; once one gave up the later ones do not wait): the pod's grace period
#: is short (90 s), and what is not delivered stays uncommitted (a restart replays it).
SHUTDOWN_FLUSH_S = 60.0
#: A flush waits in slices this long, calling the bus's ``heartbeat`` between them (/healthz stays alive).
FLUSH_SLICE_S = 10.0


class BrokerError(StoreLensError):
    """The broker cannot be reached or refused an operation."""


class UndeliveredError(BrokerError):
    """Messages still waiting for the broker after a flush's timeout (none failed: flushing again may finish),
    or a message the producer could not take within a publish's timeout (not sent: publishing again may)."""


def client_config(cfg: KafkaConfig) -> dict:
    """aiokafka connection keyword arguments (bootstrap, security) of the ``kafka`` section."""
    conf: dict[str, Any] = {"bootstrap_servers": cfg.bootstrap_servers, "security_protocol": cfg.security_protocol}
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        conf["ssl_context"] = ssl.create_default_context()
    if cfg.sasl_mechanism:
        conf["sasl_mechanism"] = cfg.sasl_mechanism
    if cfg.sasl_username:
        conf["sasl_plain_username"] = cfg.sasl_username
    if cfg.sasl_password:
        conf["sasl_plain_password"] = cfg.sasl_password
    return conf


def _lz4_fast(payload, level: int = 0) -> bytes:
    return aiokafka.codec.lz4_encode(payload, level=0)


def _use_fast_lz4() -> None:
    """Compress lz4 batches at librdkafka's default level (fast), not aiokafka's fixed level 9 (LZ4-HC).

    LZ4-HC takes 12 ms per MB of JPEG bytes (incompressible anyway) against 0.6 ms at level 0,
    which capped a producer at ~400 frames/s; the batch builders look the codec up by name.
    """
    import importlib

    for name in ("aiokafka.record.default_records", "aiokafka.record._crecords.default_records"):
        try:
            mod = importlib.import_module(name)
        except ImportError:  # no C extension
            continue
        if getattr(mod, "lz4_encode", None) is aiokafka.codec.lz4_encode:
            mod.lz4_encode = _lz4_fast


_use_fast_lz4()


# -- the event loop thread ---------------------------------------------------------------------

_io_lock = threading.Lock()
_io: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None
#: Producers and group consumers not closed yet: stopped at exit (pending messages delivered).
_open: set = set()


def _io_loop() -> asyncio.AbstractEventLoop:
    """The process' Kafka event loop (started on first use; a forked child starts its own)."""
    global _io
    with _io_lock:
        if _io is None or _io[0] != os.getpid() or not _io[2].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="storelens-kafka-io", daemon=True)
            thread.start()
            if _io is None:
                atexit.register(_close_open)
            _io = (os.getpid(), loop, thread)
            _open.clear()
        return _io[1]


def _close_open(timeout_s: float = 10.0) -> None:
    """Stop the producers and consumers nobody closed (aiokafka would warn about them at exit)."""
    if _io is None or _io[0] != os.getpid() or not _open:
        return
    owners = list(_open)

    async def close_all() -> None:
        await asyncio.wait_for(asyncio.gather(*(o._shutdown() for o in owners)), timeout_s)
    try:
        _run(close_all(), timeout_s + 2)
    except Exception as exc:  # noqa: BLE001 (exiting anyway)
        log.warning("Kafka clients not closed at exit", extra={"error": repr(exc)})


def _submit(coro: Awaitable) -> concurrent.futures.Future:
    """Start ``coro`` on the Kafka event loop; its future (cancelling it cancels the coroutine)."""
    loop = _io_loop()
    if _io is not None and threading.current_thread() is _io[2]:
        raise RuntimeError("a blocking Kafka call on the Kafka event loop thread would deadlock")
    return asyncio.run_coroutine_threadsafe(coro, loop)


def _run(coro: Awaitable, timeout_s: float | None = None):
    """Run ``coro`` on the Kafka event loop and wait for its result (BrokerError after ``timeout_s``)."""
    fut = _submit(coro)
    try:
        return fut.result(timeout_s)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise BrokerError(f"no answer from Kafka within {timeout_s:.0f} s") from None


async def _started(make: Callable[[], Any], what: str, timeout_s: float = CONNECT_TIMEOUT_S):
    """``make()`` a client and start it, retrying (a new client each time) until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        client = make()
        try:
            await client.start()
            return client
        except (kerr.KafkaError, OSError, asyncio.TimeoutError) as exc:
            await _close(client)
            if time.monotonic() >= deadline:
                raise BrokerError(f"cannot reach Kafka ({what}): {exc!r}") from None
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


async def _close(client) -> None:
    try:
        await (client.stop() if hasattr(client, "stop") else client.close())
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and getattr(task, "cancelling", lambda: 0)():
            raise  # this close itself was cancelled (its caller's timeout)
        # aiokafka's consumer stop() awaits the fetch tasks it has just cancelled: one waiting to retry a fetch (the
        # broker away) raises CancelledError into stop(), which then leaves its connections open (and a service's
        # stop ended in a traceback instead of its exit code)
        log.debug("a Kafka client's stop was interrupted by its own cancelled task; closing its connections")
        inner = getattr(client, "_client", None)
        if inner is not None:
            await _close(inner)
    except Exception as exc:  # noqa: BLE001 (closing a broken client)
        log.debug("closing a Kafka client failed", extra={"error": repr(exc)})


def _bus_message(rec) -> BusMessage:
    """A consumed aiokafka record as a :class:`BusMessage` (its headers kept)."""
    return BusMessage(rec.topic, rec.key or b"", rec.value or b"", rec.offset, rec.partition,
                      tuple(rec.headers) if rec.headers else ())


def _reader(cfg: KafkaConfig, group_id: str | None = None, **kw) -> Callable[[], AIOKafkaConsumer]:
    """Factory of a consumer that never auto-commits (manual assignment unless ``subscribe``d)."""
    return lambda: AIOKafkaConsumer(**client_config(cfg), group_id=group_id, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
                                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    fetch_max_bytes=max(MAX_MESSAGE_BYTES, 50 * 1024**2), **kw)


# -- admin ---------------------------------------------------------------------------------------

@dataclass
class TopicInfo:
    #: partition -> leader broker id
    partitions: dict[int, int] = field(default_factory=dict)


@dataclass
class ClusterInfo:
    #: broker id -> "host:port"
    brokers: dict[int, str]
    topics: dict[str, TopicInfo]


@dataclass(frozen=True)
class TopicConfig:
    """One setting of a topic (:meth:`KafkaAdmin.topic_configs`)."""

    value: str | None
    #: Set on the topic itself (not the broker's or Kafka's default).
    on_topic: bool
    sensitive: bool = False


class KafkaAdmin:
    """Blocking admin operations (services, tools and tests) over one aiokafka admin client.

    The client connects on first use and again after a failure.
    """

    def __init__(self, cfg: KafkaConfig, timeout_s: float = 30.0) -> None:
        self.cfg = cfg
        self.timeout_s = timeout_s
        self._admin: AIOKafkaAdminClient | None = None

    def call(self, fn: Callable[[AIOKafkaAdminClient], Awaitable], timeout_s: float | None = None):
        """``await fn(admin)`` on the Kafka loop; BrokerError when the broker cannot be reached or fails."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s

        async def go():
            if self._admin is None:
                self._admin = await _started(lambda: AIOKafkaAdminClient(
                    **client_config(self.cfg), request_timeout_ms=int(timeout_s * 1000)),
                    self.cfg.bootstrap_servers, timeout_s)
            try:
                return await asyncio.wait_for(fn(self._admin), timeout_s)
            except (kerr.KafkaError, OSError, asyncio.TimeoutError) as exc:
                admin, self._admin = self._admin, None
                await _close(admin)
                raise BrokerError(f"Kafka at {self.cfg.bootstrap_servers}: {exc!r}") from None

        return _run(go(), 2 * timeout_s + 5)

    def list_topics(self, timeout: float = 10.0) -> ClusterInfo:
        """Brokers and topics (with their partitions) of the cluster."""
        async def go(admin):
            cluster = await admin.describe_cluster()
            topics = await admin.describe_topics()
            return ClusterInfo(
                brokers={b["node_id"]: f"{b['host']}:{b['port']}" for b in cluster["brokers"]},
                topics={t["topic"]: TopicInfo({p["partition"]: p["leader"] for p in t["partitions"]})
                        for t in topics if t["error_code"] == 0})
        return self.call(go, timeout)

    def create_topics(self, new: list[NewTopic], timeout_s: float | None = None) -> list[str]:
        """Create topics; return the names created (existing ones are skipped)."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if not new:
            return []
        resp = self.call(lambda a: a.create_topics(new, timeout_ms=int(timeout_s * 1000)), timeout_s)
        created = []
        for name, code, *rest in resp.topic_errors:
            err = kerr.for_code(code)
            if err is kerr.NoError:
                created.append(name)
            elif err is not kerr.TopicAlreadyExistsError:  # another service won the race
                raise BrokerError(f"cannot create topic {name}: {err.__name__} {rest[0] if rest else ''}")
        return created

    def delete_topics(self, names: list[str], timeout_s: float | None = None) -> None:
        if names:
            self.call(lambda a: a.delete_topics(list(names)), timeout_s)

    def delete_groups(self, groups: list[str], timeout_s: float | None = None) -> None:
        """Delete consumer groups (each on its coordinator; errors such as a non-empty group raise)."""
        from aiokafka.protocol.admin import DeleteGroupsRequest

        async def go(admin):
            for group in groups:
                node = await admin.find_coordinator(group)
                resp = await admin._send_request(DeleteGroupsRequest([group]), node)  # no public API in aiokafka
                for name, code in resp.results:
                    if code:
                        raise kerr.for_code(code)(name)
        self.call(go, timeout_s)

    def topic_configs(self, names: list[str], timeout_s: float | None = None) -> dict[str, dict[str, TopicConfig]]:
        """Every setting of each topic of ``names``, by name (its value and whether set on the topic itself)."""
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        async def go(admin):
            resps = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
            out = {}
            for r in resps:
                for code, message, _type, name, entries in r.resources:
                    if code:
                        raise kerr.for_code(code)(f"{name}: {message}")
                    # (name, value, read_only, source, sensitive, ...): source 1 is DYNAMIC_TOPIC_CONFIG
                    out[name] = {e[0]: TopicConfig(e[1], e[3] == 1, bool(e[4])) for e in entries}
            return out
        return self.call(go, timeout_s)

    def alter_topic_configs(self, name: str, current: dict[str, TopicConfig], changes: dict[str, str],
                            timeout_s: float | None = None) -> None:
        """Set ``changes`` on topic ``name``, keeping its other settings of ``current`` (:meth:`topic_configs`):
        Kafka's ``AlterConfigs`` (the only one aiokafka has) replaces all of a topic's own settings."""
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        kept = {k: c for k, c in current.items() if c.on_topic and k not in changes}
        if any(c.sensitive for c in kept.values()):
            raise ValueError(f"topic {name} has sensitive settings that cannot be read back: not altered")
        configs = {**{k: c.value for k, c in kept.items()}, **changes}

        async def go(admin):
            for r in await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)]):
                for code, message, *_ in r.resources:
                    if code:
                        raise kerr.for_code(code)(f"{name}: {message}")
        self.call(go, timeout_s)

    def broker_config(self, broker_id: int, timeout_s: float | None = None) -> dict[str, str]:
        """The configuration of one broker, by name."""
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        async def go(admin):
            resps = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(broker_id))])
            return {e[0]: e[1] for r in resps for res in r.resources for e in res[4]}
        return self.call(go, timeout_s)

    def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            _run(_close(admin), 30)


def ensure_topics(cfg: KafkaConfig, specs: Iterable[TopicSpec] = TOPICS, timeout_s: float = 30.0,
                  raise_max_message_bytes: Iterable[str] = ()) -> list[str]:
    """Create the declared topics that do not exist yet; return the names created.

    A time-retained topic is created with a ``segment.ms`` well below its ``retention.ms``
    (:attr:`TopicSpec.segment_ms`); an existing one is brought to its spec (:func:`bound_segments`: a topic created
    before, by an older release or by hand): a ``segment.ms`` longer than that of its ``retention.ms``, or than the
    spec's ``compacted_segment_ms``, and a ``min.cleanable.dirty.ratio`` higher than the spec's are lowered; the
    ``max.message.bytes`` of the topics of ``raise_max_message_bytes`` (base names, e.g. analytics' changelog) is
    raised to the spec's when lower."""
    admin = KafkaAdmin(cfg, timeout_s)
    try:
        try:
            existing = set(admin.call(lambda a: a.list_topics()))
        except BrokerError as exc:
            raise BrokerError(f"cannot reach Kafka at {cfg.bootstrap_servers}: {exc}") from None
        new, present = [], {}
        for spec in (dataclasses.replace(s, name=topic_name(s.name, cfg.topic_prefix)) for s in specs):
            if spec.name in existing:
                present[spec.name] = spec
                continue
            configs = {"retention.ms": str(spec.retention_ms), "max.message.bytes": str(spec.max_message_bytes)}
            if spec.retention_bytes > 0:
                configs["retention.bytes"] = str(spec.retention_bytes)
            if spec.compacted:
                configs["cleanup.policy"] = "compact"
            if spec.min_cleanable_dirty_ratio is not None:
                configs["min.cleanable.dirty.ratio"] = str(spec.min_cleanable_dirty_ratio)
            if spec.segment_ms is not None:
                configs["segment.ms"] = str(spec.segment_ms)
            partitions = spec.partitions if spec.partitions_fixed else cfg.partitions
            new.append(NewTopic(spec.name, num_partitions=partitions, replication_factor=cfg.replication_factor,
                                topic_configs=configs))
        created = admin.create_topics(new)
        if present:
            bound_segments(admin, list(present), present,
                           {topic_name(n, cfg.topic_prefix) for n in raise_max_message_bytes})
        return created
    finally:
        admin.close()


def _lower(have: float, want: float) -> bool:
    return have > want


def _higher(have: float, want: float) -> bool:
    return have < want


def bound_segments(admin: KafkaAdmin, names: list[str], specs: dict[str, TopicSpec] | None = None,
                   raise_max_message_bytes: Iterable[str] = ()) -> list[str]:
    """Bring each existing topic of ``names`` to its spec (its other settings kept); returns the names changed.

    * kept by time: a ``segment.ms`` of at most :func:`~storelens.contract.topics.segment_ms` of its ``retention.ms``;
    * its spec (``specs``, by topic name) with ``compacted_segment_ms`` / ``min_cleanable_dirty_ratio``: a
      ``segment.ms`` / ``min.cleanable.dirty.ratio`` longer / higher than those is lowered to them (a compacted topic
      created by an older release: the broker's 7 days, 0.5; compaction never cleans the open segment);
    * named in ``raise_max_message_bytes``: a ``max.message.bytes`` lower than the spec's is raised to it.

    A broker that refuses (no ``AlterConfigs`` permission) is logged, not raised: the topics then keep records up to
    their ``segment.ms`` longer than their retention, or uncompacted (set them on the topic by hand)."""
    specs = specs or {}
    raise_bytes = set(raise_max_message_bytes)
    try:
        current = admin.topic_configs(names)
        changed = []
        for name, conf in current.items():
            wants: list[tuple[str, float | None, Callable[[float, float], bool]]] = []
            retention, policy = conf.get("retention.ms"), conf.get("cleanup.policy")
            if retention is not None and "delete" in (policy.value if policy else "delete"):
                wants.append(("segment.ms", segment_ms(int(retention.value)), _lower))
            spec = specs.get(name)
            if spec is not None:
                wants += [("segment.ms", spec.compacted_segment_ms if spec.compacted else None, _lower),
                          ("min.cleanable.dirty.ratio", spec.min_cleanable_dirty_ratio, _lower),
                          ("max.message.bytes", spec.max_message_bytes if name in raise_bytes else None, _higher)]
            changes: dict[str, str] = {}
            was: dict[str, str | None] = {}
            for key, want, worse in wants:
                have = conf.get(key)
                if want is None or (have is not None and have.value and not worse(float(have.value), want)):
                    continue
                if key in changes and not worse(float(changes[key]), want):
                    continue  # two bounds of the same setting: the tighter one
                changes[key], was[key] = str(want), have.value if have is not None else None
            if not changes:
                continue
            admin.alter_topic_configs(name, conf, changes)
            changed.append(name)
            log.info("topic settings brought to its spec", extra={"topic": name, "from": was, "to": changes})
        return changed
    except (BrokerError, ValueError) as exc:
        log.warning("cannot bring the existing topics' segment.ms, min.cleanable.dirty.ratio and max.message.bytes to "
                    "their specs: records may outlive their retention by up to the broker's segment.ms, a compacted "
                    "topic's open segment stays uncompacted, a message over a topic's limit is refused (set them on "
                    "the topics by hand)", extra={"topics": names, "error": str(exc)})
        return []


# -- producer ------------------------------------------------------------------------------------

def consistent_random(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """librdkafka's default partitioner: CRC-32 of the key (no key: random), not aiokafka's murmur2.

    So every camera's messages stay on the partition librdkafka sent them to before the move to
    aiokafka (detect-track's snapshots and analytics' table state are per partition).
    """
    if not key:
        return random.choice(available or all_partitions)
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


class KafkaBus:
    """An idempotent producer with the :class:`storelens.runtime.bus.Bus` interface."""

    #: Seconds a produce request, a partition without leader or an unknown topic is waited for
    #: (librdkafka's ``message.timeout.ms`` was 300 s; an idempotent batch is retried until delivered).
    REQUEST_TIMEOUT_S = 120.0
    #: Seconds a replacement of the producer (:meth:`_renew`) waits for the old one's deliveries in flight.
    RENEW_DRAIN_S = 30.0

    def __init__(self, cfg: KafkaConfig, client_id: str, heartbeat: Callable[[], None] | None = None,
                 stopping: Callable[[], bool] | None = None, sticky_failures: bool = False,
                 on_delivery_error: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.errors = 0
        #: ``on_delivery_error(topic)`` for each message whose delivery failed (on the event loop thread; a
        #: service counts them in ``storelens_delivery_errors_total{topic}``).
        self.on_delivery_error = on_delivery_error
        #: A failed delivery fails every later flush too (a stage's bus: its offsets are committed after a flush,
        #: and a commit must never go past an output that did not reach the broker); else it is reported once
        #: (the API's publisher: the request that failed answers 503 and is retried).
        self.sticky_failures = sticky_failures
        #: Called between the slices of a long flush or publish (a service's liveness beat).
        self.heartbeat = heartbeat
        #: Whether the service is shutting down (its flushes then share one :data:`SHUTDOWN_FLUSH_S`).
        self.stopping = stopping
        #: ``time.monotonic()`` since which a flush or publish has been waiting for the broker past one slice,
        #: else None.
        self.waiting_since: float | None = None
        #: Once ``stopping()``: when the stop's :data:`SHUTDOWN_FLUSH_S` ends (set by the first wait that sees the
        #: stop, shared by every later one), and whether a wait of the stop gave up (the later ones then only look).
        self._stop_deadline: float | None = None
        self._stop_gave_up = False
        self._pending: set[asyncio.Future] = set()  # delivery futures (touched on the loop thread only)
        #: Producers started after one had a message refused (:meth:`_renew`).
        self.renewals = 0
        self._renewing: asyncio.Task | None = None  # (loop thread) the replacement of the producer under way
        self._retired: set[asyncio.Task] = set()  # (loop thread) replaced producers being stopped
        self._closed = False
        self._make = lambda: AIOKafkaProducer(
            **client_config(cfg),
            client_id=f"{cfg.group_prefix}-{client_id}",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            compression_type="lz4",
            max_request_size=MAX_MESSAGE_BYTES,
            max_batch_size=1_000_000,  # librdkafka's batch.size
            partitioner=consistent_random,
            request_timeout_ms=int(self.REQUEST_TIMEOUT_S * 1000),
        )
        self._producer: AIOKafkaProducer = _run(_started(self._make, cfg.bootstrap_servers))
        _open.add(self)

    def _renew(self, producer: AIOKafkaProducer, error: str) -> None:
        """(event loop) A message of ``producer`` was refused: replace it by a new producer (once per producer).

        After a refused batch (e.g. too large for its topic) an idempotent producer's later batches of that
        partition are refused as out of sequence (``OutOfOrderSequenceNumber``) for ever; a new producer has a new
        producer id and sequence. Messages published meanwhile wait for the new one (:meth:`_send`); those the old
        one still holds are delivered or fail (counted) as it stops."""
        if producer is not self._producer or self._renewing is not None or self._closed:
            return
        log.warning("a message was refused: the producer is replaced", extra={"error": error})
        self._renewing = asyncio.ensure_future(self._replace_producer(producer))

    async def _replace_producer(self, old: AIOKafkaProducer) -> None:
        try:
            # first the old producer's messages in flight, delivered or failed (at most RENEW_DRAIN_S): the new one
            # sends nothing of a partition before what the old one still holds of it (the order per key)
            pending = set(self._pending)  # all the old producer's: publishes wait for the replacement meanwhile
            if pending:
                await asyncio.wait(pending, timeout=self.RENEW_DRAIN_S)
            while True:
                try:
                    new = await _started(self._make, self.cfg.bootstrap_servers)
                    break
                except BrokerError as exc:  # the broker is away: publishes wait (and time out) meanwhile
                    log.warning("cannot start a new producer yet", extra={"error": str(exc)})
            if self._closed:
                await _close(new)
                return
            self._producer = new
            self.renewals += 1
        finally:
            self._renewing = None
        retire = asyncio.ensure_future(_close(old))
        self._retired.add(retire)
        retire.add_done_callback(self._retired.discard)

    def _failed(self, topic: str, error: str, counted: bool = True) -> None:
        """(event loop) One message of ``topic`` was not delivered (``counted``: for the next :meth:`flush`; not a
        message of :meth:`publish_all`, whose caller gets its failure)."""
        if counted:
            self.errors += 1
        log.error("delivery failed", extra={"topic": topic, "error": error})
        if self.on_delivery_error is not None:
            self.on_delivery_error(topic)

    def _on_delivery(self, fut: asyncio.Future, topic: str, counted: bool, producer: AIOKafkaProducer) -> None:
        self._pending.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            error = "cancelled" if fut.cancelled() else repr(fut.exception())
            self._failed(topic, error, counted)
            exc = None if fut.cancelled() else fut.exception()
            # refused by the broker (too large, out of sequence, ...): a new producer; a timeout or a broker away
            # (retriable) keeps the producer, which rides through the outage as before
            if isinstance(exc, kerr.BrokerResponseError) and not exc.retriable:
                self._renew(producer, error)

    async def _send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                    headers: Sequence[tuple[str, bytes]] = (), awaited: bool = False) -> asyncio.Future:
        """Hand one message to the producer; its delivery future (``awaited``: the caller judges its failure, it is
        not counted for :meth:`flush`)."""
        while self._renewing is not None:  # the producer is being replaced: wait for the new one
            await asyncio.wait({self._renewing})
        try:
            await self._producer.client._wait_on_metadata(topic)  # an unknown topic fails delivery, not publish()
        except kerr.KafkaError as exc:
            self._failed(topic, repr(exc), not awaited)
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
            return fut
        while True:  # bounded by publish(): it cancels this coroutine after its timeout
            producer = self._producer
            try:
                fut = await producer.send(topic, value=value, key=key, partition=partition,
                                          headers=list(headers) or None)
                break
            except kerr.KafkaTimeoutError:  # the partition's buffer stayed full (broker away): keep waiting
                log.warning("producer buffer full; waiting for the broker", extra={"topic": topic})
        self._pending.add(fut)
        fut.add_done_callback(lambda f: self._on_delivery(f, topic, not awaited, producer))
        return fut

    def publish(self, topic: str, key: bytes, value: bytes, timeout_s: float | None = None,
                headers: Sequence[tuple[str, bytes]] = ()) -> asyncio.Future:
        """Hand a message to the producer (delivered in the background: :meth:`flush` waits for it), with
        ``headers`` (record headers: ``message-type``, :func:`storelens.contract.messages.type_headers`); its
        delivery future (:meth:`delivered` waits for it; once done, its result's ``offset`` is the record's).

        While the broker is away the producer cannot take it once the partition's batches are full (or the
        topic's metadata is missing): this waits as :meth:`flush` does, up to ``timeout_s`` (default
        :data:`FLUSH_WAIT_S`; once ``stopping()`` the stop's time left, :meth:`stop_left`) in slices of
        :data:`FLUSH_SLICE_S` calling ``heartbeat()`` between them (and marks :attr:`waiting_since`), then raises
        :class:`UndeliveredError`; the message is then not sent.
        """
        fut = _submit(self._send(topic, key, value, headers=headers))
        try:
            self._ride_through(lambda wait: bool(concurrent.futures.wait([fut], wait).done), timeout_s,
                               lambda waited: f"{topic}: the producer did not take the message in {waited:.0f} s "
                                              "(the broker is away)", "publish")
        except BaseException:
            fut.cancel()  # aiokafka: cancelling send() drops the message
            raise
        return fut.result()

    def delivered(self, delivery: asyncio.Future, timeout_s: float) -> bool | None:
        """Whether the message of ``delivery`` (:meth:`publish`'s future) was delivered, waiting up to ``timeout_s``:
        ``True``, ``False`` (its delivery failed; logged and counted already), ``None`` (not yet)."""
        async def go() -> bool | None:
            if not delivery.done():
                await asyncio.wait({delivery}, timeout=timeout_s)
            if not delivery.done():
                return None
            return not delivery.cancelled() and delivery.exception() is None
        return _run(go(), timeout_s + 30)

    def publish_wait(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None,
                     timeout_s: float = 30.0, headers: Sequence[tuple[str, bytes]] = ()) -> tuple[int, int]:
        """Publish and wait for the broker's ack; return ``(partition, offset)`` (BrokerError on failure:
        :meth:`publish_all` of one message)."""
        return self.publish_all(topic, [(key, value, headers)], timeout_s, partition)[0]

    def publish_all(self, topic: str, messages: Sequence[tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]],
                    timeout_s: float = 30.0, partition: int | None = None) -> list[tuple[int, int]]:
        """Publish ``messages`` (``(key, value, headers)`` each) and wait for the broker's ack of each one; their
        ``(partition, offset)``. :class:`BrokerError` when the broker refused one, :class:`UndeliveredError` when
        one was not delivered within ``timeout_s``.

        Only these messages are awaited and judged: the producer's other messages (another thread's, e.g. a
        concurrent API request's) neither fail this call nor wait for it, and a failure here is the caller's
        answer, not counted for the next :meth:`flush` (which a shared error count made report another request's
        failure, and then none to the request that had it).
        """
        async def go():
            futs = [await self._send(topic, key, value, partition, headers, awaited=True)
                    for key, value, headers in messages]
            return [(md.partition, md.offset) for md in await asyncio.gather(*futs)]
        try:
            return _run(asyncio.wait_for(go(), timeout_s), timeout_s + 5)
        except asyncio.TimeoutError:
            raise UndeliveredError(f"{topic}: message not delivered within {timeout_s:.0f} s") from None
        except kerr.KafkaError as exc:
            raise BrokerError(f"{topic}: message not delivered: {exc!r}") from None

    async def _drain(self, timeout_s: float) -> tuple[int, int]:
        """Wait for the pending deliveries: (undelivered, failed); the failures are reset when all were delivered."""
        pending = set(self._pending)
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
        if self._pending:
            return len(self._pending), 0
        failed = self.errors
        if not self.sticky_failures:
            self.errors = 0
        return 0, failed

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the broker has every message published so far.

        Waits up to ``timeout_s`` (default :data:`FLUSH_WAIT_S`; once ``stopping()`` at most the stop's time left,
        :meth:`stop_left`) in slices of :data:`FLUSH_SLICE_S`, calling ``heartbeat()`` between them, so a
        broker restart is ridden through. :class:`UndeliveredError` if messages are still pending then;
        :class:`BrokerError` at once if any failed delivery since the last flush.
        """
        remaining = [0]

        def drained(wait: float) -> bool:
            remaining[0], failed = _run(self._drain(wait), wait + 30)
            if failed:
                raise BrokerError(f"{failed} messages failed delivery" + (
                    " (nothing is committed after it: the service must restart)" if self.sticky_failures else ""))
            return not remaining[0]

        self._ride_through(drained, timeout_s, lambda waited: f"{remaining[0]} messages still undelivered after "
                                                              f"{waited:.0f} s", "flush")

    def stop_left(self) -> float | None:
        """Seconds left of the stop's one :data:`SHUTDOWN_FLUSH_S` (counted from the first call that sees
        ``stopping()``); None while not stopping."""
        if self.stopping is None or not self.stopping():
            return None
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        return max(0.0, self._stop_deadline - time.monotonic())

    def _ride_through(self, step: Callable[[float], bool], timeout_s: float | None, undelivered: Callable[[float], str],
                      what: str) -> None:
        """``step(wait)`` (True: done) until done, in slices of :data:`FLUSH_SLICE_S` with ``heartbeat()`` between
        them, up to ``timeout_s`` (None: :data:`FLUSH_WAIT_S`), and once ``stopping()`` at most until the stop's
        deadline (:meth:`stop_left`; after a wait of the stop gave up at that deadline: one look without waiting; one
        that ran out of its own shorter ``timeout_s`` leaves the rest to the later waits); then
        :class:`UndeliveredError` (``undelivered(waited_s)``). Past one slice :attr:`waiting_since` is set."""
        start, marked = time.monotonic(), False
        try:
            while True:
                stop_left = self.stop_left()
                if stop_left is not None and self._stop_gave_up:
                    if step(0.0):
                        return
                    raise UndeliveredError(undelivered(time.monotonic() - start) + " (not waited for: an earlier "
                                           "wait of the stop gave up)")
                limit = timeout_s if timeout_s is not None else FLUSH_WAIT_S
                own_left = limit - (time.monotonic() - start)
                left = own_left if stop_left is None else min(own_left, stop_left)
                wait = max(0.1, min(FLUSH_SLICE_S, left))
                if step(wait):
                    return
                if left <= wait:
                    # the stop's deadline was the limit: the stop gives up (a caller's own shorter timeout_s that
                    # ran out leaves the rest of the stop's time to the later waits)
                    if stop_left is not None and stop_left <= own_left:
                        self._stop_gave_up = True
                        log.error(f"{what} at the stop gave up: messages left undelivered, their inputs uncommitted "
                                  "(replayed after the restart)", extra={"pending": len(self._pending)})
                    raise UndeliveredError(undelivered(time.monotonic() - start))
                if self.waiting_since is None:  # (several threads may wait: the first one marks it)
                    self.waiting_since, marked = start, True
                    log.warning(f"{what} waiting for the broker to take pending messages",
                                extra={"pending": len(self._pending), "limit_s": limit})
                if self.heartbeat is not None:
                    self.heartbeat()
        finally:
            if marked:
                log.info("broker wait over", extra={"waited_s": round(time.monotonic() - start, 1)})
                self.waiting_since = None

    def flush_some(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for a delivery (no waiting for the queue to empty); the deliveries that failed
        since the last flush or ``flush_some``, reported once: a later :meth:`flush` does not fail for them (each one
        was logged and passed to ``on_delivery_error`` already), unless ``sticky_failures``."""
        async def go() -> int:
            pending = set(self._pending)
            if pending:
                await asyncio.wait(pending, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(timeout_s)
            failed = self.errors
            if not self.sticky_failures:
                self.errors = 0
            return failed
        return _run(go(), timeout_s + 30)

    def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether the broker answers a metadata request now."""
        try:
            _run(asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s), timeout_s + 5)
            return True
        except Exception:  # noqa: BLE001 (any failure means "not reachable")
            return False

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is pending and stop the producer."""
        try:
            self.flush(timeout_s)
        finally:
            _run(self._shutdown(), timeout_s + 30)

    async def _shutdown(self) -> None:
        _open.discard(self)
        self._closed = True
        if self._renewing is not None:
            self._renewing.cancel()
        await _close(self._producer)
        if self._retired:
            await asyncio.wait(set(self._retired))

    def subscribe(self, topic: str) -> "KafkaConsumer":
        raise NotImplementedError("use KafkaConsumer(cfg, group, [topics], bus) for consumer groups")


# -- consumer ------------------------------------------------------------------------------------

@dataclass
class _Pending:
    count: int = 0
    since: float = 0.0


class _HandOff(ConsumerRebalanceListener):
    """Passes aiokafka's rebalance events to the thread that polls (see the module docstring)."""

    def __init__(self, owner: "KafkaConsumer") -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        if revoked:
            await self.owner._hand_off("revoke", revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.owner._hand_off("assign", assigned)


class KafkaConsumer:
    """A consumer-group member that commits only what has been fully processed.

    Call :meth:`done` after a message's outputs were published; offsets are
    committed every ``commit_every`` messages or ``commit_interval_s``, and
    on :meth:`close`, each time after flushing ``bus``. ``on_assign`` and
    ``on_revoke`` get ``[(topic, partition), ...]`` and run on the thread
    that calls :meth:`poll`; after ``on_revoke`` the done offsets of the revoked partitions are
    committed before they are released (``commit_on_revoke=False``: not at all; detect-track commits a
    partition only with its snapshot, in its ``on_revoke``).
    """

    #: Records fetched per round trip to the event loop (kept locally until polled).
    BATCH = 100

    def __init__(self, cfg: KafkaConfig, group: str, topics: list[str], bus: KafkaBus | None = None,
                 commit_every: int = 50, commit_interval_s: float = 2.0, client_id: str | None = None,
                 on_assign=None, on_revoke=None, pattern: str | None = None,
                 metadata_refresh_s: float = 300.0, commit_on_revoke: bool = True) -> None:
        self.bus = bus
        self.commit_on_revoke = commit_on_revoke
        self.group = f"{cfg.group_prefix}-{group}"
        self.on_assign_hook = on_assign
        self.on_revoke_hook = on_revoke
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self.assigned: set[tuple[str, int]] = set()
        #: A member of the group with its assignment (True from an assignment, possibly of no partition: an
        #: extra replica is idle, not broken; False from a revocation that left nothing assigned, e.g. while the
        #: group rebalances or after this member left it, until the next assignment).
        self.connected = False
        self._pending = _Pending(since=time.monotonic())
        #: next offset after the done messages, per partition, not committed yet
        self._done: dict[TopicPartition, int] = {}
        #: next offset after the last message poll() returned, per partition
        self._position: dict[TopicPartition, int] = {}
        self._buf: collections.deque = collections.deque()
        self._last = None
        #: rebalance events (kind, partitions, future) queued by the listener for the polling thread
        self._events: collections.deque = collections.deque()
        self._closing = False

        async def start() -> AIOKafkaConsumer:
            self._wake = asyncio.Event()
            c = await _started(_reader(
                cfg, self.group, client_id=client_id or self.group,
                session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
                # librdkafka waited max.poll.interval.ms for a member's rebalance callbacks too
                rebalance_timeout_ms=300_000, max_poll_interval_ms=300_000,
                # a regex subscription finds new matching topics when the metadata is refreshed
                metadata_max_age_ms=int(metadata_refresh_s * 1000)), cfg.bootstrap_servers)
            if pattern is not None:
                c.subscribe(pattern=pattern, listener=_HandOff(self))
            else:
                c.subscribe(topics, listener=_HandOff(self))  # joins the group in the background
            return c

        self._c: AIOKafkaConsumer = _run(start())
        _open.add(self)

    # -- rebalance hand-off ----------------------------------------------------------------------

    async def _hand_off(self, kind: str, tps) -> None:
        """(event loop) Queue a rebalance event for the polling thread and wait until it was handled."""
        if self._closing:
            return
        fut = asyncio.get_running_loop().create_future()
        self._events.append((kind, sorted(tps), fut))
        self._wake.set()
        await fut

    def _serve_events(self) -> None:
        """(polling thread) Run the queued rebalance events' hooks, then let aiokafka continue."""
        while self._events:
            kind, tps, fut = self._events.popleft()
            try:
                (self._on_assign if kind == "assign" else self._on_revoke)(tps)
            finally:
                _io_loop().call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))

    def _on_assign(self, tps: list[TopicPartition]) -> None:
        parts = [(tp.topic, tp.partition) for tp in tps]
        self.connected = True
        self.assigned |= set(parts)
        if self.on_assign_hook is not None:
            self.on_assign_hook(parts)
        log.info("partitions assigned", extra={"group": self.group, "partitions": str(sorted(self.assigned))})

    def _on_revoke(self, tps: list[TopicPartition]) -> None:
        parts = [(tp.topic, tp.partition) for tp in tps]
        if self.on_revoke_hook is not None:
            self.on_revoke_hook(parts)
        if self.commit_on_revoke:  # hand over cleanly: what was processed of these partitions is committed
            self.commit(set(parts))
        self.assigned -= set(parts)
        self.connected = bool(self.assigned)
        self._forget(set(tps))

    def _forget(self, tps: set[TopicPartition]) -> None:
        """Drop local state (fetched records, done offsets, positions) of partitions no longer read on."""
        self._buf = collections.deque(r for r in self._buf if TopicPartition(r.topic, r.partition) not in tps)
        for tp in tps:
            self._done.pop(tp, None)
            self._position.pop(tp, None)
        if not self._done:
            self._pending = _Pending(since=time.monotonic())

    # -- polling ----------------------------------------------------------------------------------

    async def _fetch(self, timeout_s: float) -> dict:
        """(event loop) Records fetched within ``timeout_s``; returns early when a rebalance event is queued."""
        if self._events:
            return {}
        self._wake.clear()
        get = asyncio.ensure_future(self._c.getmany(timeout_ms=int(timeout_s * 1000), max_records=self.BATCH))
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({get, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            if not get.done():
                get.cancel()
        return get.result() if get.done() and not get.cancelled() else {}

    def poll(self, timeout_s: float = 1.0) -> BusMessage | None:
        self._maybe_commit()
        self._serve_events()
        if not self._buf:
            try:
                records = _run(self._fetch(timeout_s), timeout_s + 60)
            except (kerr.KafkaError, BrokerError) as exc:
                log.warning("consumer error", extra={"error": repr(exc)})
                return None
            self._serve_events()  # hooks first: records of partitions revoked meanwhile are dropped
            for recs in records.values():
                self._buf.extend(r for r in recs if (r.topic, r.partition) in self.assigned)
        if not self._buf:
            return None
        rec = self._buf.popleft()
        self.connected = True
        self._last = rec
        self._position[TopicPartition(rec.topic, rec.partition)] = rec.offset + 1
        return _bus_message(rec)

    def done(self) -> None:
        """Mark the last polled message as processed (its outputs are published)."""
        rec = self._last
        self._done[TopicPartition(rec.topic, rec.partition)] = rec.offset + 1
        if self._pending.count == 0:
            self._pending.since = time.monotonic()
        self._pending.count += 1

    def _maybe_commit(self) -> None:
        p = self._pending
        if p.count and (p.count >= self.commit_every or time.monotonic() - p.since >= self.commit_interval_s):
            self.commit()

    def commit(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Flush ``bus``, then commit the offsets of the messages marked done (nothing else); only those of
        ``partitions`` when given (detect-track commits a partition with its snapshot, and another partition's
        offsets must not go past that partition's own snapshot)."""
        if not self._pending.count:
            return
        if self.bus is not None:
            self.bus.flush()
        offsets = {tp: off for tp, off in self._done.items() if (tp.topic, tp.partition) in self.assigned
                   and (partitions is None or (tp.topic, tp.partition) in partitions)}
        if offsets:
            stop_left = getattr(self.bus, "stop_left", lambda: None)()  # a stop: within its one deadline
            try:
                _run(self._c.commit(offsets), 60 if stop_left is None else max(1.0, min(60.0, stop_left)))
            except (kerr.KafkaError, BrokerError) as exc:
                log.warning("commit failed; will retry", extra={"error": repr(exc)})
                return
        if partitions is None:
            self._done.clear()
        else:
            for tp in offsets:
                del self._done[tp]
        if not self._done:
            self._pending = _Pending(since=time.monotonic())

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the high watermark (of the last fetch), per assigned partition."""
        async def go():
            out = {}
            for t, p in sorted(self.assigned):
                tp = TopicPartition(t, p)
                # Only partitions this consumer has read from: asking the position of another one can
                # wait for an offset lookup, and this runs on the worker's thread (it stalled
                # detect-track for seconds every LAG_EVERY_S when 5 of its 6 partitions were idle).
                pos = self._position.get(tp)
                if pos is None:
                    continue
                try:
                    hi = self._c.highwater(tp)
                except (AssertionError, kerr.KafkaError):
                    continue
                if hi is not None:
                    out[(t, p)] = max(0, hi - pos)
            return out
        return _run(go(), 30)

    def seek_partition(self, topic: str, partition: int, offset: int) -> None:
        tp = TopicPartition(topic, partition)

        async def go():
            self._c.seek(tp, offset)
        _run(go(), 30)
        self._buf = collections.deque(r for r in self._buf if (r.topic, r.partition) != (topic, partition))
        self._position[tp] = offset

    def close(self) -> None:
        """Serve a pending rebalance, revoke (hook, commit) what is assigned, leave the group."""
        try:
            self._serve_events()
            if self.assigned:
                self._on_revoke(sorted(TopicPartition(t, p) for t, p in self.assigned))
            elif self.commit_on_revoke:
                self.commit()
        finally:
            _run(self._shutdown(), 60)

    async def _shutdown(self) -> None:
        """(event loop) Leave the group; a rebalance waiting for the polling thread goes on without it."""
        _open.discard(self)
        self._closing = True
        while self._events:
            _kind, _tps, fut = self._events.popleft()
            fut.done() or fut.set_result(None)
        await _close(self._c)


# -- readers -------------------------------------------------------------------------------------

async def _read_partition(cfg: KafkaConfig, topic: str, partition: int, start: int | None, end: int | None,
                          timeout_s: float) -> tuple[list[BusMessage], bool]:
    """The messages with ``start <= offset < end`` (None: the beginning / the end now), complete?"""
    deadline = time.monotonic() + timeout_s
    c = await _started(_reader(cfg), cfg.bootstrap_servers, timeout_s)
    out: list[BusMessage] = []
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        if start is None:
            start = (await c.beginning_offsets([tp]))[tp]
        if end is None:
            end = (await c.end_offsets([tp]))[tp]
        if end <= start:
            return out, True
        c.seek(tp, start)
        while time.monotonic() < deadline:
            batch = await c.getmany(tp, timeout_ms=500)
            for rec in batch.get(tp, []):
                if rec.offset >= end:
                    return out, True
                out.append(_bus_message(rec))
            if (out and out[-1].offset >= end - 1) or await c.position(tp) >= end:
                return out, True  # (the rest were no data records, e.g. compacted away or markers)
        return out, False
    finally:
        await _close(c)


def read_to_end(cfg: KafkaConfig, topic: str, partition: int = 0, group: str = "reader",
                timeout_s: float = 30.0) -> list[tuple[bytes, bytes, int]]:
    """Every ``(key, value, offset)`` of ``topic``/``partition`` up to its end now (blocking; no group commits).

    ``group`` is kept for compatibility: the read is a manual assignment and needs no group.
    """
    out, complete = _run(_read_partition(cfg, topic, partition, None, None, timeout_s), timeout_s + 60)
    if not complete:
        raise BrokerError(f"timed out reading {topic}/{partition} to its end")
    return [(b.key, b.value, b.offset) for b in out]


def read_range(cfg: KafkaConfig, topic: str, partition: int, start: int, end: int, group: str,
               timeout_s: float = 30.0) -> list[BusMessage]:
    """The messages of ``topic``/``partition`` with ``start <= offset < end`` (blocking; headers kept).

    Raises :class:`BrokerError` when the whole range could not be read within ``timeout_s`` (the broker
    unreachable, or not every message came in time): never a part of the range as if it were all of it (the
    analytics service's gap re-read would step past the rest for good).
    ``group`` is kept for compatibility (a manual assignment needs no group).
    """
    out, complete = _run(_read_partition(cfg, topic, partition, start, end, timeout_s), timeout_s + 60)
    if not complete:
        raise BrokerError(f"read {len(out)} messages of {topic}/{partition} [{start}, {end}) within {timeout_s:g} s, "
                          "not the whole range")
    return out


def consume_all(cfg: KafkaConfig, topic: str, timeout_s: float = 30.0, expect: int | None = None,
                settle_s: float = 0.0) -> list[BusMessage]:
    """Messages of every partition of ``topic`` from the beginning (blocking; no group).

    ``expect=None``: up to each partition's end now (BrokerError when not done in ``timeout_s``).
    Otherwise: until ``expect`` messages arrived or ``timeout_s`` passed, then ``settle_s`` more.
    """
    async def go():
        deadline = time.monotonic() + timeout_s
        c = await _started(_reader(cfg), cfg.bootstrap_servers, timeout_s)
        out: list[BusMessage] = []
        try:
            tps = [TopicPartition(topic, p) for p in sorted(await c._client._wait_on_metadata(topic))]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            ends = await c.end_offsets(tps) if expect is None else {}

            async def caught_up() -> bool:
                if expect is not None:
                    return len(out) >= expect
                return all([await c.position(tp) >= ends[tp] for tp in tps])

            async def fetch(until: float) -> None:
                batch = await c.getmany(timeout_ms=int(min(0.5, max(0.0, until - time.monotonic())) * 1000))
                out.extend(_bus_message(r) for recs in batch.values() for r in recs)

            while not await caught_up() and time.monotonic() < deadline:
                await fetch(deadline)
            if expect is None and not await caught_up():
                raise BrokerError(f"could not read {topic} to its end in {timeout_s:.0f} s")
            settle = time.monotonic() + settle_s
            while time.monotonic() < settle:
                await fetch(settle)
            return out
        finally:
            await _close(c)
    return _run(go(), timeout_s + settle_s + 60)


class TopicTail:
    """Every partition of ``topic`` from its beginning, then what comes: no consumer group, nothing committed.

    Each process (each replica) reads every message, from the start at every start: the reader
    of a small compacted topic that holds state for everybody, e.g. ``site-config``. It polls like
    :class:`KafkaConsumer` (``poll``/``done``/``commit``/``lag``/``close``), so a
    :class:`~storelens.runtime.transports.KafkaTransport` can serve it before its groups.

    Example:
        >>> tail = TopicTail(cfg.kafka, "storelens.site-config")                   # doctest: +SKIP
        >>> backlog = tail.read_to_end()          # what is there now            # doctest: +SKIP
        >>> msg = tail.poll(0)                     # then what comes, or None     # doctest: +SKIP
    """

    def __init__(self, cfg: KafkaConfig, topic: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.topic = topic
        self.group = f"tail:{topic}"
        self.connected = False
        self._buf: collections.deque = collections.deque()

        async def start() -> AIOKafkaConsumer:
            c = await _started(_reader(cfg), cfg.bootstrap_servers, timeout_s)
            self._tps = [TopicPartition(topic, p) for p in sorted(await c._client._wait_on_metadata(topic))]
            c.assign(self._tps)
            await c.seek_to_beginning(*self._tps)
            return c

        self._c: AIOKafkaConsumer = _run(start(), timeout_s + 60)
        _open.add(self)
        self.connected = True
        self.assigned = {(tp.topic, tp.partition) for tp in self._tps}

    def read_to_end(self, timeout_s: float = 30.0) -> list[BusMessage]:
        """The messages up to each partition's end now (then :meth:`poll` goes on after them).

        Raises :class:`BrokerError` when they could not be read within ``timeout_s``.
        """
        async def go() -> list[BusMessage]:
            deadline = time.monotonic() + timeout_s
            ends = await self._c.end_offsets(self._tps)
            while not all([await self._c.position(tp) >= ends[tp] for tp in self._tps]):
                if time.monotonic() >= deadline:
                    raise BrokerError(f"could not read {self.topic} to its end in {timeout_s:.0f} s")
                batch = await self._c.getmany(timeout_ms=500)
                self._buf.extend(r for recs in batch.values() for r in recs)
            return [_bus_message(self._buf.popleft()) for _ in range(len(self._buf))]
        return _run(go(), timeout_s + 60)

    def poll(self, timeout_s: float = 1.0) -> BusMessage | None:
        if not self._buf:
            try:
                batch = _run(self._c.getmany(timeout_ms=int(timeout_s * 1000), max_records=100), timeout_s + 60)
            except (kerr.KafkaError, BrokerError) as exc:
                log.warning("consumer error", extra={"topic": self.topic, "error": repr(exc)})
                return None
            self._buf.extend(r for recs in batch.values() for r in recs)
        return _bus_message(self._buf.popleft()) if self._buf else None

    def done(self) -> None:  # nothing to commit: the next start reads from the beginning again
        return None

    def commit(self) -> None:
        return None

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def close(self) -> None:
        _run(self._shutdown(), 60)

    async def _shutdown(self) -> None:
        _open.discard(self)
        await _close(self._c)


def end_offsets(cfg: KafkaConfig, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """The end offset (next offset to be written) of every partition of ``topic``."""
    async def go():
        c = await _started(_reader(cfg), cfg.bootstrap_servers, timeout_s)
        try:
            tps = [TopicPartition(topic, p) for p in await c._client._wait_on_metadata(topic)]
            return {tp.partition: off for tp, off in (await c.end_offsets(tps)).items()}
        finally:
            await _close(c)
    return _run(go(), timeout_s + 60)


def commit_offsets(cfg: KafkaConfig, group_id: str, offsets: dict[tuple[str, int], int],
                   timeout_s: float = 30.0) -> None:
    """Commit ``{(topic, partition): next_offset}`` for consumer group ``group_id`` (it must have no members)."""
    async def go():
        c = await _started(_reader(cfg, group_id), cfg.bootstrap_servers, timeout_s)
        try:
            c.assign([TopicPartition(t, p) for t, p in offsets])
            await c.commit({TopicPartition(t, p): off for (t, p), off in offsets.items()})
        finally:
            await _close(c)
    _run(go(), timeout_s + 60)


class BrokerProbe:
    """Answers whether the broker responds to a metadata request (blocking; reuses one admin client)."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg
        self._admin: KafkaAdmin | None = None

    def __call__(self, timeout_s: float = 3.0) -> bool:
        if self._admin is None:
            self._admin = KafkaAdmin(self.cfg, timeout_s)
        try:
            return bool(self._admin.call(lambda a: a.describe_cluster(), timeout_s)["brokers"])
        except Exception:  # noqa: BLE001 (any failure means "not reachable")
            return False
