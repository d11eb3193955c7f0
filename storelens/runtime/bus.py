"""Message bus: the seam between stages.

The embedded mode uses :class:`InProcessBus`; the distributed mode uses
Kafka with the same interface. Both carry protobuf-encoded bytes keyed by
camera id, so every stage runs the same encode/decode path in both modes,
and headers: every publisher names its message's type in the ``message-type``
header (:func:`storelens.contract.messages.type_headers`), which the runner checks
before decoding (a message without it is decoded as before).

Example:
    >>> bus = InProcessBus()
    >>> bus.publish("frames", b"cam-1", b"payload")
    >>> sub = bus.subscribe("frames")   # sees messages published from now on
    >>> bus.publish("frames", b"cam-1", b"second")
    >>> sub.poll(timeout_s=0).value
    b'second'
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class BusMessage:
    topic: str
    key: bytes
    value: bytes
    offset: int
    partition: int = 0
    #: ``(name, value)`` pairs (Kafka record headers): ``message-type``, the value's protobuf message type
    #: (:func:`storelens.contract.messages.type_headers`); empty from a producer that sets none.
    headers: tuple[tuple[str, bytes], ...] = ()


class Subscription(Protocol):
    def poll(self, timeout_s: float | None = None) -> BusMessage | None: ...


class Bus(Protocol):
    def publish(self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None: ...

    def subscribe(self, topic: str) -> Subscription: ...

    def flush(self) -> None: ...


class _Queue:
    """Bounded FIFO for one subscriber; publishers block when it is full (back-pressure)."""

    def __init__(self, maxsize: int) -> None:
        self._items: collections.deque[BusMessage] = collections.deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.closed = False

    def close(self) -> None:
        """Stop bounding: publishers never wait again (shutdown)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def put(self, msg: BusMessage) -> None:
        with self._cond:
            while self._maxsize and len(self._items) >= self._maxsize and not self.closed:
                self._cond.wait()
            self._items.append(msg)
            self._cond.notify_all()

    def poll(self, timeout_s: float | None = None) -> BusMessage | None:
        with self._cond:
            if not self._items:
                if timeout_s == 0:
                    return None
                self._cond.wait_for(lambda: bool(self._items), timeout=timeout_s)
                if not self._items:
                    return None
            msg = self._items.popleft()
            self._cond.notify_all()
            return msg

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class InProcessBus:
    """Thread-safe in-process topics with per-subscriber bounded queues.

    Each subscription receives every message published to its topic after
    it subscribed, in publish order (per topic, so per camera key too).
    ``maxsize`` bounds each queue so a fast producer cannot run ahead of a
    slow consumer by more than that many messages.
    """

    def __init__(self, maxsize: int = 64) -> None:
        self._subs: dict[str, list[_Queue]] = collections.defaultdict(list)
        self._offsets: dict[str, int] = collections.defaultdict(int)
        self._lock = threading.Lock()
        self._topic_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._maxsize = maxsize

    def publish(self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        # One lock per topic, held while enqueuing, so every subscriber sees a
        # topic's messages in offset order even with concurrent publishers. A
        # full queue blocks only that topic's publishers (back-pressure).
        with self._lock:
            topic_lock = self._topic_locks[topic]
        with topic_lock:
            with self._lock:
                offset = self._offsets[topic]
                self._offsets[topic] = offset + 1
                queues = list(self._subs[topic])
            msg = BusMessage(topic, key, value, offset, 0, tuple(headers))
            for q in queues:
                q.put(msg)

    def subscribe(self, topic: str) -> _Queue:
        q = _Queue(self._maxsize)
        with self._lock:
            self._subs[topic].append(q)
        return q

    def flush(self) -> None:  # nothing is buffered outside the queues
        return None

    def close(self) -> None:
        """Shutdown: no publisher waits on a full queue any more (a stopped consumer never drains it)."""
        with self._lock:
            queues = [q for qs in self._subs.values() for q in qs]
        for q in queues:
            q.close()

    def published(self, topic: str) -> int:
        with self._lock:
            return self._offsets[topic]
