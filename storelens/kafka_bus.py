"""Kafka transport of the distributed mode (confluent-kafka / librdkafka).

Same contract as the in-process bus: protobuf bytes keyed by camera id, on
the topics declared in :mod:`storelens.topics`. Delivery is at-least-once:

* consumers never auto-commit; a service stores a message's offset only
  after its outputs were produced, and :meth:`KafkaConsumer.commit` flushes
  the producer first, so an offset is committed only once everything the
  message caused is on the broker;
* producers are idempotent (``enable.idempotence``), so broker retries do
  not duplicate; a redelivery after a crash reproduces the same messages
  (deterministic ids), and every sink upserts.

Example:
    >>> bus = KafkaBus(KafkaConfig(), client_id="ingest")            # doctest: +SKIP
    >>> bus.publish("frames", b"cam-1", frame_bytes)                     # doctest: +SKIP
    >>> bus.flush()                                                      # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Iterable

from storelens.bus import BusMessage
from storelens.config import KafkaConfig
from storelens.errors import StoreLensError
from storelens.topics import TOPICS, TopicSpec, topic_name

log = logging.getLogger(__name__)


class BrokerError(StoreLensError):
    """The broker cannot be reached or refused an operation."""


def client_config(cfg: KafkaConfig) -> dict:
    conf = {"bootstrap.servers": cfg.bootstrap_servers, "security.protocol": cfg.security_protocol}
    if cfg.sasl_mechanism:
        conf["sasl.mechanism"] = cfg.sasl_mechanism
    if cfg.sasl_username:
        conf["sasl.username"] = cfg.sasl_username
    if cfg.sasl_password:
        conf["sasl.password"] = cfg.sasl_password
    return conf


def ensure_topics(cfg: KafkaConfig, specs: Iterable[TopicSpec] = TOPICS, timeout_s: float = 30.0) -> list[str]:
    """Create the declared topics that do not exist yet; return the names created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(cfg))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka at {cfg.bootstrap_servers}: {exc}") from None
    specs = [dataclasses.replace(s, name=topic_name(s.name, cfg.topic_prefix)) for s in specs]
    new = []
    for spec in specs:
        if spec.name in existing:
            continue
        configs = {"retention.ms": str(spec.retention_ms), "max.message.bytes": str(spec.max_message_bytes)}
        if spec.retention_bytes > 0:
            configs["retention.bytes"] = str(spec.retention_bytes)
        if spec.compacted:
            configs["cleanup.policy"] = "compact"
        partitions = spec.partitions if spec.partitions_fixed else cfg.partitions
        new.append(NewTopic(spec.name, num_partitions=partitions, replication_factor=cfg.replication_factor,
                            config=configs))
    created = []
    for name, fut in admin.create_topics(new, request_timeout=timeout_s).items() if new else []:
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another service won the race
                raise BrokerError(f"cannot create topic {name}: {exc}") from None
    return created


class KafkaBus:
    """An idempotent producer with the :class:`storelens.bus.Bus` interface."""

    def __init__(self, cfg: KafkaConfig, client_id: str) -> None:
        from confluent_kafka import Producer

        self.cfg = cfg
        self.errors = 0
        self._producer = Producer({
            **client_config(cfg),
            "client.id": f"{cfg.group_prefix}-{client_id}",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": max(s.max_message_bytes for s in TOPICS),
            "queue.buffering.max.kbytes": 256 * 1024,
        })

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self.errors += 1
            log.error("delivery failed", extra={"topic": msg.topic(), "error": str(err)})

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise BrokerError(f"{remaining} messages still undelivered after {timeout_s:.0f} s")
        if self.errors:
            n, self.errors = self.errors, 0
            raise BrokerError(f"{n} messages failed delivery")

    def flush_some(self, timeout_s: float) -> None:
        """Serve delivery callbacks for up to ``timeout_s`` (no waiting for the queue to empty)."""
        self._producer.poll(timeout_s)

    def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether the broker answers a metadata request now."""
        try:
            self._producer.list_topics(timeout=timeout_s)
            return True
        except Exception:
            return False

    def subscribe(self, topic: str) -> "KafkaConsumer":
        raise NotImplementedError("use KafkaConsumer(cfg, group, [topics], bus) for consumer groups")


@dataclass
class _Pending:
    count: int = 0
    since: float = 0.0


class KafkaConsumer:
    """A consumer-group member that commits only what has been fully processed.

    Call :meth:`done` after a message's outputs were published; offsets are
    committed every ``commit_every`` messages or ``commit_interval_s``, and
    on :meth:`close`, each time after flushing ``bus``.
    """

    def __init__(self, cfg: KafkaConfig, group: str, topics: list[str], bus: KafkaBus | None = None,
                 commit_every: int = 50, commit_interval_s: float = 2.0, client_id: str | None = None,
                 on_assign=None, on_revoke=None) -> None:
        from confluent_kafka import Consumer

        self.bus = bus
        self.group = f"{cfg.group_prefix}-{group}"
        self._c = Consumer({
            **client_config(cfg),
            "group.id": self.group,
            "client.id": client_id or self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.message.max.bytes": max(s.max_message_bytes for s in TOPICS),
            "max.partition.fetch.bytes": max(s.max_message_bytes for s in TOPICS),
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "partition.assignment.strategy": "cooperative-sticky",
        })
        self.on_assign_hook = on_assign
        self.on_revoke_hook = on_revoke
        self._c.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._pending = _Pending(since=time.monotonic())
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self.assigned: set[tuple[str, int]] = set()
        self.connected = False

    def _on_assign(self, consumer, partitions) -> None:
        self.connected = True
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        if self.on_assign_hook is not None:
            self.on_assign_hook([(p.topic, p.partition) for p in partitions])
        log.info("partitions assigned", extra={"group": self.group, "partitions": str(sorted(self.assigned))})

    def _on_revoke(self, consumer, partitions) -> None:
        if self.on_revoke_hook is not None:
            self.on_revoke_hook([(p.topic, p.partition) for p in partitions])
        self.commit()  # hand over cleanly: everything processed so far is committed
        self.assigned -= {(p.topic, p.partition) for p in partitions}

    def poll(self, timeout_s: float = 1.0) -> BusMessage | None:
        from confluent_kafka import KafkaError

        self._maybe_commit()
        msg = self._c.poll(timeout_s)
        if msg is None:
            return None
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error": str(msg.error())})
            return None
        self.connected = True
        self._last = msg
        return BusMessage(msg.topic(), msg.key() or b"", msg.value() or b"", msg.offset(), msg.partition())

    def done(self) -> None:
        """Mark the last polled message as processed (its outputs are published)."""
        self._c.store_offsets(message=self._last)
        if self._pending.count == 0:
            self._pending.since = time.monotonic()
        self._pending.count += 1

    def _maybe_commit(self) -> None:
        p = self._pending
        if p.count and (p.count >= self.commit_every or time.monotonic() - p.since >= self.commit_interval_s):
            self.commit()

    def commit(self) -> None:
        from confluent_kafka import KafkaException

        if not self._pending.count:
            return
        if self.bus is not None:
            self.bus.flush()
        try:
            self._c.commit(asynchronous=False)
        except KafkaException as exc:
            if "NO_OFFSET" not in str(exc):
                log.warning("commit failed; will retry", extra={"error": str(exc)})
                return
        self._pending = _Pending(since=time.monotonic())

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the high watermark, per assigned partition."""
        from confluent_kafka import TopicPartition

        out = {}
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        if not tps:
            return out
        for tp in self._c.position(tps):
            try:
                lo, hi = self._c.get_watermark_offsets(tp, cached=True)
            except Exception:
                continue
            pos = tp.offset if tp.offset >= 0 else lo
            out[(tp.topic, tp.partition)] = max(0, hi - pos)
        return out

    def seek_partition(self, topic: str, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition

        self._c.seek(TopicPartition(topic, partition, offset))

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._c.close()
