"""Messages the API publishes to the embedded pipeline, which has no broker (table ``outbox``).

In the distributed mode the API publishes to Kafka (:class:`~storelens.runtime.workers.TopicPublisher`); in the
embedded mode the same publisher writes the same bytes (topic, key, protobuf value) here through
:class:`HistoryOutbox`, and the embedded pipeline, which polls the history for site versions already, takes them
every second and publishes them onto its in-process bus (:meth:`HistoryOutbox.take`, the store's
``take_outbox``; :mod:`storelens.runtime.embedded`): a customer erasure reaches the faces stage on
``customer-erasures`` as it reaches the reid service. A message is deleted once taken, and one nobody took
(no pipeline running: its faces gallery is loaded from the store at its start anyway) when a later one is
published after :data:`OUTBOX_KEPT_MS`.

Example:
    >>> from storelens.storage import SqlStorage
    >>> outbox = HistoryOutbox(SqlStorage(":memory:"))
    >>> outbox.publish("customer-erasures", b"c-1", b"\\x0a\\x03c-1")
    >>> outbox.take(["customer-erasures"]), outbox.take(["customer-erasures"])
    ([('customer-erasures', b'c-1', b'\\n\\x03c-1', ())], [])
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import sqlalchemy as sa

from storelens.contract import messages as m
from storelens.contract import topics
from storelens.storage.schema import outbox

#: How long a message nobody took stays: the ``person-crops`` retention (1 h), the longest an erasure can matter
#: to a running pipeline (crops captured before it).
OUTBOX_KEPT_MS = next(t.retention_ms for t in topics.TOPICS if t.name == topics.PERSON_CROPS)


class HistoryOutbox:
    """A bus (``publish``, ``flush``) whose messages wait in the history store for the embedded pipeline."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def publish(self, topic: str, key: bytes, value: bytes, timeout_s: float | None = None,
                headers: m.Headers = ()) -> None:
        """Store one message of ``topic`` (a base name) with its :data:`~storelens.contract.messages.TYPE_HEADER`,
        deleting those older than :data:`OUTBOX_KEPT_MS`."""
        now = int(time.time() * 1000)
        kind = next((v.decode() for k, v in headers if k == m.TYPE_HEADER and v), None)

        def write(conn: sa.Connection) -> None:
            conn.execute(sa.delete(outbox).where(outbox.c.ts_ms < now - OUTBOX_KEPT_MS))
            conn.execute(sa.insert(outbox).values(ts_ms=now, topic=topic, key=bytes(key), value=bytes(value),
                                               message_type=kind))

        self.storage._write(write)

    def publish_all(self, topic: str, messages: Sequence[tuple[bytes, bytes, m.Headers]],
                    timeout_s: float | None = None) -> None:
        """Store ``(key, value, headers)`` messages of ``topic``, as :meth:`KafkaBus.publish_all
        <storelens.runtime.kafka.KafkaBus.publish_all>` sends them (the API's publishers call this)."""
        for key, value, headers in messages:
            self.publish(topic, key, value, headers=headers)

    def flush(self, timeout_s: float | None = None) -> None:  # committed by publish
        return None

    def close(self, timeout_s: float | None = None) -> None:  # the store is the app's, closed with it
        return None

    def take(self, wanted: Sequence[str]) -> list[tuple[str, bytes, bytes, m.Headers]]:
        """The messages of the topics ``wanted``, oldest first, deleted from the store: ``(topic, key, value,
        headers)``, the headers those published with (its message type)."""
        query = sa.select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value, outbox.c.message_type).where(
            outbox.c.topic.in_(list(wanted))).order_by(outbox.c.id)
        rows = self.storage._rows(query)
        if not rows:
            return []
        ids = [r.id for r in rows]
        self.storage._write(lambda conn: conn.execute(sa.delete(outbox).where(outbox.c.id.in_(ids))))
        return [(r.topic, bytes(r.key), bytes(r.value),
                 ((m.TYPE_HEADER, r.message_type.encode()),) if r.message_type else ()) for r in rows]
