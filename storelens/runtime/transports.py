"""Transports of the runner: the in-process bus (embedded mode) and Kafka (services).

Both present a stage's input topics as one stream of :class:`~storelens.runtime.bus.BusMessage`
and publish by *base* topic name (``tracks``); Kafka adds ``kafka.topic_prefix``. A publish carries
the message's headers (``message-type``: :func:`storelens.contract.messages.type_headers`).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from storelens.contract import topics
from storelens.errors import StoreLensError
from storelens.runtime.bus import BusMessage, InProcessBus

log = logging.getLogger(__name__)

#: What ``kafka.topic_prefix`` allows (a topic of a regex subscription is such a prefix + one of its base names).
_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]*")

#: Value that ends a topic in the embedded mode: its producers have all finished.
END_OF_TOPIC = b"__stop__"


class InProcessTransport:
    """A stage's inputs on the in-process bus.

    Args:
        bus: the bus.
        inputs: topics to consume (subscribed now, so nothing published afterwards is missed).
        ending: the inputs that have a producer in this pipeline; the transport has
            :attr:`ended` once each of them delivered :data:`END_OF_TOPIC`.
        outputs: topics this stage publishes; :meth:`close` ends them for the stages downstream.
    """

    def __init__(self, bus: InProcessBus, inputs: Sequence[str], ending: Sequence[str] = (),
                 outputs: Sequence[str] = ()) -> None:
        self.bus = bus
        self._subs = [(t, bus.subscribe(t)) for t in inputs]
        self._open = {t for t in ending if t in inputs}
        self.outputs = list(outputs)
        self._turn = 0

    @property
    def ended(self) -> bool:
        return not self._open

    def poll(self, timeout_s: float) -> BusMessage | None:
        live = [(t, s) for t, s in self._subs if t in self._open] or self._subs
        if len(self._subs) == 1:
            msg = self._subs[0][1].poll(timeout_s)
        else:
            msg = None
            for i in range(len(self._subs)):  # round robin, without waiting
                t, s = self._subs[(self._turn + i) % len(self._subs)]
                msg = s.poll(0)
                if msg is not None:
                    self._turn = (self._turn + i + 1) % len(self._subs)
                    break
            if msg is None:
                msg = live[0][1].poll(min(timeout_s, 0.02))
        if msg is not None and msg.value == END_OF_TOPIC:
            self._open.discard(msg.topic)
            return None
        return msg

    def take_queued(self) -> list[BusMessage]:
        """What waits on the subscriptions now, taken without waiting, topic by topic in the order of ``inputs``,
        each topic's in its order: at most what each queue held when called (the embedded stop hands it to the
        stopped stage: :meth:`~storelens.runtime.embedded.EmbeddedPipeline._end_streams`). An end-of-topic marker is
        not returned: it ends its topic, as when polled."""
        out = []
        for _topic, sub in self._subs:
            for _ in range(len(sub)):
                msg = sub.poll(0)
                if msg is None:
                    break
                if msg.value == END_OF_TOPIC:
                    self._open.discard(msg.topic)
                    continue
                out.append(msg)
        return out

    def base_topic(self, topic: str) -> str:
        return topic

    def publish(self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> str:
        self.bus.publish(topic, key, value, headers=headers)
        return topic

    def ack(self, msg: BusMessage) -> None:  # nothing to commit in memory
        return None

    def close(self) -> None:
        for t in self.outputs:
            self.bus.publish(t, b"", END_OF_TOPIC)


@dataclass(frozen=True)
class ConsumerGroup:
    """One consumer group of a Kafka transport: ``group`` (suffix of ``kafka.group_prefix``) reads ``topics``."""

    group: str
    topics: tuple[str, ...]
    commit_every: int = 50
    commit_interval_s: float = 2.0
    #: Subscribe to every topic matching this regex instead (e.g. every store's ``<prefix>store-kpis``, the chain
    #: roll-up); a matching topic's base name is the one of ``topics`` it ends with.
    pattern: str | None = None
    #: How often a regex subscription looks for new matching topics.
    metadata_refresh_s: float = 300.0
    #: Commit the revoked partitions' done offsets at a rebalance and at the end (False: only the stage's own
    #: hooks commit, as detect-track's snapshots do).
    commit_on_revoke: bool = True


class KafkaTransport:
    """A stage's inputs and outputs on Kafka (topic names get ``kafka.topic_prefix``).

    Several consumer groups are polled in order, all but the last without waiting: an
    earlier group's messages are served first (reid serves erasures before crops).
    :meth:`ack` marks the message done in its group; offsets are committed by the
    consumer after flushing the producer, so nothing is committed before its outputs
    are on the broker.
    """

    def __init__(self, kafka_cfg, client_id: str, groups: Sequence[ConsumerGroup], on_assign=None,
                 on_revoke=None, heartbeat: Callable[[], None] | None = None,
                 stopping: Callable[[], bool] | None = None) -> None:
        from storelens.runtime.kafka import KafkaBus, KafkaConsumer

        self.cfg = kafka_cfg
        self.prefix = kafka_cfg.topic_prefix
        # heartbeat/stopping: a flush rides through a broker restart (see KafkaBus.flush)
        self.bus = KafkaBus(kafka_cfg, client_id, heartbeat=heartbeat, stopping=stopping, sticky_failures=True)
        self.consumers = []
        self._by_topic: dict[str, object] = {}
        #: (base names, consumer) of the regex subscriptions
        self._patterns: list[tuple[tuple[str, ...], object]] = []
        for i, g in enumerate(groups):
            names = [topics.topic_name(t, self.prefix) for t in g.topics]
            last = i == len(groups) - 1
            c = KafkaConsumer(kafka_cfg, g.group, names, bus=self.bus, commit_every=g.commit_every,
                              commit_interval_s=g.commit_interval_s,
                              on_assign=on_assign if last else None, on_revoke=on_revoke if last else None,
                              pattern=g.pattern, metadata_refresh_s=g.metadata_refresh_s,
                              commit_on_revoke=g.commit_on_revoke)
            self.consumers.append(c)
            if g.pattern is not None:
                self._patterns.append((tuple(g.topics), c))
                continue
            for n in names:
                self._by_topic[n] = c
        self.exit_code = 0

    ended = False

    @property
    def connected(self) -> bool:
        return all(c.connected for c in self.consumers)

    def topic(self, base: str) -> str:
        return topics.topic_name(base, self.prefix)

    def _pattern_match(self, topic: str) -> tuple[str, object] | None:
        """The base name (and consumer) of a topic of a regex subscription: the longest of its bases the topic
        ends with after a prefix ``kafka.topic_prefix`` allows (``berlin_store-kpis``, ``s1.store-kpis``)."""
        best: tuple[str, object] | None = None
        for bases, c in self._patterns:
            for base in bases:
                if (topic.endswith(base) and _TOPIC_PREFIX.fullmatch(topic[:len(topic) - len(base)])
                        and (best is None or len(base) > len(best[0]))):
                    best = base, c
        return best

    def base_topic(self, topic: str) -> str:
        if topic not in self._by_topic:
            hit = self._pattern_match(topic)
            if hit is not None:
                return hit[0]
        return topics.base_name(topic, self.prefix)

    def poll(self, timeout_s: float) -> BusMessage | None:
        for c in self.consumers[:-1]:
            msg = c.poll(0)
            if msg is not None:
                return msg
        return self.consumers[-1].poll(timeout_s)

    def publish(self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> str:
        name = self.topic(topic)
        self.bus.publish(name, key, value, headers=headers)
        return name

    def ack(self, msg: BusMessage) -> None:
        c = self._by_topic.get(msg.topic)
        if c is None:
            hit = self._pattern_match(msg.topic)
            c = hit[1] if hit is not None else self.consumers[-1]
        c.done()

    def lag(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for c in self.consumers:
            out.update(c.lag())
        return out

    def close(self) -> None:
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
