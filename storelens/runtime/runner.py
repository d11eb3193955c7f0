"""One runner for every stage, in both modes: check type -> decode -> stage -> sinks -> publish -> acknowledge.

:class:`RunnerCore` holds the parts that do not depend on the transport (decoding, the
stage call, the error policy of :mod:`storelens.runtime.policy`, the sinks with their
retries, metrics); :class:`Runner` drives it with a :class:`Transport`: the in-process
bus (embedded mode) or Kafka (services), see :mod:`storelens.runtime.transports`. The
analytics service hosts the same core inside a faust agent
(:mod:`storelens.runtime.analytics_app`), its changelog-backed table serving as the
state store.

A message is acknowledged only after its records were written and its outputs
published (at-least-once); every stage skips redeliveries by sequence number and
every sink upserts, so a replay changes nothing (effect-once).

**Message types.** Every message the runner publishes carries the ``message-type`` header, its protobuf
message's full name (:func:`~storelens.contract.messages.type_headers`). Before decoding a message, the
runner checks that header against the class the stage's ``inputs`` declares for the topic (the class its
``decode`` parses): another type (a producer publishing to the wrong topic) is a dead letter with reason
``message_type`` naming both types, never decoded -- protobuf's lenient parsing would otherwise read, e.g.,
a ``Frame`` on ``person-crops`` as a crop's end-of-stream marker. A message with no such header (an older
producer, a message already on a topic before the upgrade) is decoded as before.

**Ticks.** A stage with a ``tick(now_ms) -> Outputs`` method and a ``tick_s`` period (the
analytics stage: alerts such as ``camera_down`` need time to pass without messages; reid and the
embedded faces stage: an erasure's embeddings leave memory on time without crops) is
called every ``tick_s`` seconds of wall time between messages; its outputs go through the
same sinks and publishing as a message's (:meth:`RunnerCore.tick`). The runner's loop does
it in the embedded mode; the analytics service calls the same :meth:`RunnerCore.tick` from a
faust timer.

**A stop.** The embedded mode's state is in memory only: when its run stops, once the stage's thread has ended, it
hands a stage after detect-track what is still queued for it (processed and written here, as
:meth:`RunnerCore.deliver` does), then calls :meth:`RunnerCore.end_streams`, so a stage with an
``end_streams() -> Outputs`` method (faces: the tracks still open; analytics: the cameras still
streaming) writes what it still holds open to the sinks, and the embedded mode hands what it would
publish to the stages downstream (faces' final summaries and decisions to analytics). The services do
not (a restarted service goes on from its state).

**Batches.** A stage with a ``handle_batch`` method (:mod:`storelens.stages.base`; detect-track)
run by ``Runner(..., batch_max=N)`` with N > 1 gets the messages that wait behind a polled one
in one call: the runner keeps polling without waiting while the next message is on the same
topic and of a camera (key) not yet in the batch, up to N. The first message that cannot join
(another topic, a camera already in the batch, one the hooks skip) is held back and handled
first in the next turn, so nothing is lost or reordered, and a camera's messages are handled
one after the other as always. :meth:`RunnerCore.process_batch` decodes each message (a
malformed one becomes its own dead letter) and makes one ``handle_batch`` call; every message
then goes through the same sinks, publishing and acknowledgement as a single one, in order.
Only the embedded mode batches (``pipeline.batch_cameras``): the Kafka consumer's ``done()``
marks the *last polled* record as processed (:mod:`storelens.runtime.kafka`), so acknowledging
the first message of a batch would commit the others before their outputs exist; the services
keep ``batch_max=1``. Batch sizes are counted in :attr:`Runner.batch_sizes` and the
``storelens_batch_size`` histogram.

Example (in-process, see tests/test_runner.py):
    >>> bus = InProcessBus()                                              # doctest: +SKIP
    >>> runner = Runner(RunnerCore(stage), InProcessTransport(bus, stage))  # doctest: +SKIP
    >>> threading.Thread(target=runner.run).start()                       # doctest: +SKIP
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.bus import BusMessage
from storelens.runtime.policy import Backoff, classify_stage_error, rejected_errors
from storelens.runtime.service import ServiceMetrics
from storelens.stages.base import Outputs, Stage

log = logging.getLogger(__name__)


def dead_letter(source_topic: str, key: bytes, payload: bytes, reason: str, service: str) -> m.DeadLetter:
    return m.DeadLetter(source_topic=source_topic, key=key, payload=payload, reason=reason,
                        service=service, ts_ms=int(time.time() * 1000))


#: Bytes of a payload kept in a dead letter that would not fit the ``dead-letter`` topic whole (an output over its
#: topic's limit, or an input near the limit): the rest is cut; its size and SHA-256 are in the reason.
DEAD_LETTER_KEPT_BYTES = 64 * 1024


def cut_payload(payload: bytes) -> tuple[bytes, str]:
    """``payload``'s first :data:`DEAD_LETTER_KEPT_BYTES` and a note saying so, with its size and SHA-256."""
    import hashlib

    kept = payload[:DEAD_LETTER_KEPT_BYTES]
    return kept, (f"payload of {len(payload)} bytes cut to its first {len(kept)} bytes, "
                  f"sha256 {hashlib.sha256(payload).hexdigest()}")


def fitting_dead_letter(dl: m.DeadLetter) -> m.DeadLetter:
    """``dl`` as it fits the ``dead-letter`` topic: unchanged, or its payload cut (:func:`cut_payload`, noted in
    its reason), so a dead letter is never refused itself."""
    limit = topics.spec(topics.DEAD_LETTER).max_message_bytes
    value = m.encode(dl)
    if topics.fits(limit, dl.key, value, m.type_headers(dl)):
        return dl
    payload, note = cut_payload(dl.payload)
    return m.DeadLetter(source_topic=dl.source_topic, key=dl.key, payload=payload, reason=f"{dl.reason}; {note}",
                        service=dl.service, ts_ms=dl.ts_ms)


@dataclass(frozen=True)
class FittedOutput:
    """What to publish for one output (:func:`fit_output`): the output itself on its topic, or its dead letter."""

    topic: str  #: base name: the output's, or ``dead-letter``
    message: Any
    value: bytes  #: ``message`` encoded


def fit_output(core: "RunnerCore", topic: str, name: str, key: bytes, message: Any, limits: Mapping[str, int],
               source: BusMessage | None = None, producer_max_bytes: int | None = None) -> FittedOutput:
    """One output of a stage as it may be published on ``topic`` (a base name; ``name``: the deployment's, e.g.
    with ``kafka.topic_prefix``): itself, or, when it is over the topic's ``max_message_bytes`` (``limits``, by base
    name: the broker's, :func:`~storelens.runtime.workers.topic_limits`; else the declared one;
    :func:`~storelens.contract.topics.fits`), a dead letter with reason ``too_large`` instead (its payload cut,
    :func:`cut_payload`; its source topic ``name``, as every dead letter's), logged and counted in
    ``errors{reason="too_large"}`` and ``dead_letters{topic=name}`` of ``core``. The broker would refuse such an
    output, and a producer then fails its later sends (a crash loop replaying the same message). The one check of
    every runner: :class:`Runner` and the analytics service (:mod:`storelens.runtime.analytics_app`).
    ``source``: the input the output comes from (logged), if any. ``producer_max_bytes``: the largest request the
    producer sends (its ``max_request_size``), when lower than the topic's limit the one checked: the producer
    refuses a larger message itself (``MessageSizeTooLargeError``), whatever the topic allows."""
    value = m.encode(message)
    spec = topics.spec(topic)
    limit = limits.get(topic, spec.max_message_bytes if spec is not None else None)
    if producer_max_bytes is not None:
        limit = producer_max_bytes if limit is None else min(limit, producer_max_bytes)
    if limit is None or topics.fits(limit, key, value, m.type_headers(message)):
        return FittedOutput(topic, message, value)
    payload, note = cut_payload(value)
    reason = (f"too_large: a {type(message).__name__} for {name} of {len(value)} bytes, over the topic's limit "
              f"of {limit} bytes ({note})")
    log.error("output too large for its topic: dead-lettered", extra={
        "stage": core.stage.name, "topic": name, "bytes": len(value), "limit": limit,
        "input_topic": source.topic if source is not None else None,
        "offset": source.offset if source is not None else None})
    core._error("too_large")
    core.metrics.dead_letters.labels(name).inc()
    core.dead_letters += 1
    dl = dead_letter(name, key, payload, reason, core.stage.name)
    return FittedOutput(topics.DEAD_LETTER, dl, m.encode(dl))


class Sink(Protocol):
    """Persists records (history, live state). Blocking; raises when the store is unreachable."""

    name: str

    def write(self, records: Sequence[Any]) -> None: ...


class Transport(Protocol):
    """Where messages come from and go to (in-process bus or Kafka)."""

    def poll(self, timeout_s: float) -> BusMessage | None: ...

    def base_topic(self, topic: str) -> str: ...

    def publish(self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> str: ...

    def ack(self, msg: BusMessage) -> None: ...

    @property
    def ended(self) -> bool: ...

    def close(self) -> None: ...


@dataclass
class Handled:
    """The fate of one input message."""

    msg: BusMessage
    topic: str  #: base topic name
    value: Any = None  #: the decoded message (None when it could not be decoded)
    outputs: Outputs = field(default_factory=Outputs)
    dead_letter: m.DeadLetter | None = None
    #: Set when the process must stop without acknowledging the message.
    stop: BaseException | None = None
    reason: str = ""


#: Pseudo topic of :meth:`RunnerCore.tick` outputs (never consumed or published).
TICK_TOPIC = "_tick"
#: Pseudo topic of :meth:`RunnerCore.end_streams` outputs (never consumed or published).
END_STREAMS_TOPIC = "_end_streams"
#: Longest sleep between two heartbeats while a failing sink is retried (:meth:`RunnerCore.write_sinks`).
RETRY_BEAT_S = 1.0


class RunnerCore:
    """Decode, process, sink: the transport-independent part of running one stage.

    Args:
        stage: see :mod:`storelens.stages.base`.
        sinks: written in order with every message's ``Outputs.records``.
        metrics: counters (a private registry when not given).
        should_stop: ends sink retries when the process is stopping (the message is then not acknowledged).
        chores: periodic work of the process (``name``, ``due() -> bool``, ``run(metrics)``), run
            between messages by :meth:`run_chores` (e.g. the retention purge,
            :mod:`storelens.runtime.retention`).
        beat: the service's liveness heartbeat (:meth:`ServiceRuntime.beat`), called at least every
            :data:`RETRY_BEAT_S` while a failing sink is retried: a store that is down makes the service not
            ready (``sink_ok``), not dead (the liveness probe would restart it, over and over).
    """

    def __init__(self, stage: Stage, sinks: Sequence[Sink] = (), metrics: ServiceMetrics | None = None,
                 should_stop: Callable[[], bool] = lambda: False, chores: Sequence[Any] = (),
                 beat: Callable[[], None] = lambda: None) -> None:
        self.stage = stage
        self.beat = beat
        self.sinks = list(sinks)
        self.chores = list(chores)
        if metrics is None:
            from prometheus_client import CollectorRegistry

            metrics = ServiceMetrics(CollectorRegistry())
        self.metrics = metrics
        self.should_stop = should_stop
        #: Sink name -> whether its last write succeeded (readiness).
        self.sink_ok = {s.name: True for s in self.sinks}
        #: ``(sink name, time.monotonic() at its start)`` of the sink write under way, else ``None`` (read by another
        #: thread: the analytics service's readiness reports a write that hangs, e.g. on a PostgreSQL lock).
        self.writing: tuple[str, float] | None = None
        self.dead_letters = 0
        self.errors: dict[str, int] = {}

    def _count_found(self, outputs: Outputs) -> None:
        """Count the problems a stage found in a message it handled (``Outputs.info["errors"]``: reason -> how
        many, e.g. a counting line outside the frame) in ``storelens_errors_total{reason}``."""
        for reason, n in (outputs.info.get("errors") or {}).items():
            self.metrics.errors.labels(reason).inc(n)
            self.errors[reason] = self.errors.get(reason, 0) + n

    def _error(self, reason: str) -> None:
        self.metrics.errors.labels(reason).inc()
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def check_type(self, msg: BusMessage, topic: str) -> None:
        """Raise :class:`~storelens.errors.WrongMessageType` (a dead letter) when ``msg``'s ``message-type`` header
        names another type than the class the stage's ``inputs`` declares for ``topic`` (a base name); nothing
        when it has no header (decoded as before) or the stage does not consume ``topic`` (its decode says so)."""
        if msg.headers:
            cls = self.stage.inputs.get(topic)
            if cls is not None:
                m.check_type(msg.headers, cls)

    def process(self, msg: BusMessage, topic: str, before: Callable[[Any], None] | None = None) -> Handled:
        """Decode and process one message (no I/O); classify failures by the error policy.

        ``before(decoded)`` runs between decoding and the stage (the analytics service loads
        the camera's state from its table there).
        """
        h = Handled(msg, topic)
        try:
            self.check_type(msg, topic)
            h.value = self.stage.decode(topic, msg.value)
            if before is not None:
                before(h.value)
            h.outputs = self.stage.handle(topic, h.value)
        except Exception as exc:  # noqa: BLE001 (classified by the policy)
            self._failed(h, exc)
            return h
        self._count_found(h.outputs)
        if h.outputs.duplicate:
            self.metrics.duplicates.labels(msg.topic).inc()
        return h

    def process_batch(self, msgs: Sequence[BusMessage], topic: str) -> list[Handled]:
        """Decode several messages of ``topic`` (each of another camera) and process them in ONE
        ``stage.handle_batch`` call (no I/O); one :class:`Handled` per message, in order.

        A message that cannot be decoded (or is of another type: :meth:`check_type`) becomes its own dead
        letter, the others go on. When
        ``handle_batch`` raises, the error policy decides for the whole batch: ``stop`` stops at
        every message of the batch (none is acknowledged, not even a malformed one: all are
        redelivered); ``dead_letter`` processes the messages again one by one (:meth:`process`),
        so only the bad one is dead-lettered.
        """
        hs = [Handled(msg, topic) for msg in msgs]
        ok: list[Handled] = []
        bad: list[tuple[Handled, Exception]] = []
        for h in hs:
            try:
                self.check_type(h.msg, topic)
                h.value = self.stage.decode(topic, h.msg.value)
                ok.append(h)
            except Exception as exc:  # noqa: BLE001 (classified by the policy)
                bad.append((h, exc))
        for h, exc in bad:  # a decode step that means "stop" (not a DecodeError) stops before the stage runs
            verdict, reason = classify_stage_error(exc, self.stage.on_error)
            if verdict == "stop":
                return self._stop(hs, exc, reason)
        if ok:
            try:
                outputs = self.stage.handle_batch(topic, [h.value for h in ok])
                if len(outputs) != len(ok):
                    raise RuntimeError(f"handle_batch returned {len(outputs)} outputs for {len(ok)} messages")
            except Exception as exc:  # noqa: BLE001 (classified by the policy)
                verdict, reason = classify_stage_error(exc, self.stage.on_error)
                if verdict == "dead_letter":
                    log.info("batch failed; processing its messages one by one",
                             extra={"stage": self.stage.name, "topic": msgs[0].topic, "error": repr(exc)})
                    return [self.process(h.msg, topic) for h in hs]
                return self._stop(hs, exc, reason)
            for h, out in zip(ok, outputs):
                h.outputs = out
                self._count_found(out)
                if out.duplicate:
                    self.metrics.duplicates.labels(h.msg.topic).inc()
        for h, exc in bad:
            self._failed(h, exc)
        return hs

    def _stop(self, hs: list[Handled], exc: BaseException, reason: str) -> list[Handled]:
        """The ``stop`` verdict on ``hs`` (one message, or a whole batch): counted, logged, none acknowledged."""
        self._error(reason)
        log.error("stage failed; stopping (the message is redelivered after the restart)", exc_info=exc,
                  extra={"stage": self.stage.name, "topic": hs[0].msg.topic, "offset": hs[0].msg.offset,
                         "messages": len(hs), "error": repr(exc)})
        for h in hs:
            h.reason, h.stop, h.dead_letter, h.outputs = reason, exc, None, Outputs()
        return hs

    def _failed(self, h: Handled, exc: BaseException) -> None:
        """Classify an exception raised while decoding or processing ``h``: stop, or a dead letter."""
        msg, topic = h.msg, h.topic
        verdict, reason = classify_stage_error(exc, self.stage.on_error)
        if verdict == "stop":
            self._stop([h], exc, reason)
            return
        h.reason = reason
        self._error(reason)
        cls = self.stage.inputs.get(topic)
        kind = cls.DESCRIPTOR.full_name if hasattr(cls, "DESCRIPTOR") else f"{topic} message"
        text = str(exc) if reason != "process" else f"cannot process {kind}: {exc!r}"
        if reason == "process":
            log.error("message processing failed", exc_info=exc,
                      extra={"stage": self.stage.name, "topic": msg.topic})
        self._to_dead_letter(h, text)

    def _to_dead_letter(self, h: Handled, reason: str) -> None:
        msg = h.msg
        log.warning("dead letter", extra={"stage": self.stage.name, "topic": msg.topic, "offset": msg.offset,
                                          "reason": reason})
        self.metrics.dead_letters.labels(msg.topic).inc()
        self.dead_letters += 1
        h.dead_letter = dead_letter(msg.topic, msg.key, msg.value, reason, self.stage.name)
        h.outputs = Outputs()

    def tick(self, now_ms: int) -> Handled | None:
        """The stage's periodic tick at wall time ``now_ms`` (no I/O): its outputs as a :class:`Handled` to write
        and publish like a message's, or ``None`` when the stage has no tick or it produced nothing."""
        tick = getattr(self.stage, "tick", None)
        if tick is None:
            return None
        h = Handled(BusMessage(TICK_TOPIC, b"", b"", -1), TICK_TOPIC)
        try:
            h.outputs = tick(now_ms)
        except Exception:  # noqa: BLE001 (a failing tick must not stop the messages)
            log.exception("stage tick failed", extra={"stage": self.stage.name})
            self._error("tick")
            return None
        if not h.outputs.records and not h.outputs.publish:
            return None
        return h

    def end_streams(self) -> Handled | None:
        """What a stage with ``end_streams() -> Outputs`` still holds open when an embedded run stops (the faces
        stage: its open tracks' final summaries and decisions; the analytics stage: the cameras' open visits,
        buckets, journeys), written to the sinks as a tick's outputs are (a sink that rejects them is logged and
        counted, the others are still written; one try each, the run is stopping). Nothing is published here:
        the bus has closed; the caller hands ``outputs.publish`` to the stages downstream
        (:meth:`deliver`). ``None`` when the stage has no such method or nothing was open; else the
        :class:`Handled` (``stop`` set when a sink failed)."""
        end = getattr(self.stage, "end_streams", None)
        if end is None:
            return None
        h = Handled(BusMessage(END_STREAMS_TOPIC, b"", b"", -1), END_STREAMS_TOPIC)
        h.outputs = end()
        if not h.outputs.records and not h.outputs.publish:
            return None
        h = self.write_sinks(h)
        if h.stop is not None:
            self._error("end_streams")
            log.error("the records of the streams ended at the stop were not written",
                      extra={"stage": self.stage.name, "error": repr(h.stop), "records": len(h.outputs.records)})
        return h

    def deliver(self, topic: str, camera_id: str, message: Any) -> Handled:
        """One message another stage would have published on ``topic`` (a base name), handled as if consumed --
        encoded, decoded, processed, written to the sinks -- after the transport has closed (the embedded stop:
        an upstream stage's :meth:`end_streams` outputs). Its own outputs are not published; a sink that fails
        gets one try when stopping (``stop`` set), a record it rejects makes a counted dead letter."""
        msg = BusMessage(topic, topics.camera_key(camera_id), m.encode(message), -1, 0, m.type_headers(message))
        return self.write_sinks(self.process(msg, topic))

    def run_chores(self) -> None:
        """Run the chores that are due; a failing chore is logged and counted, never fatal (it runs again
        when next due). Each sets :attr:`writing` (``chore:<name>``) while it runs: a hung one is a stall too."""
        for chore in self.chores:
            if not chore.due():
                continue
            self.writing = (f"chore:{chore.name}", time.monotonic())  # watched like a sink write (a stall)
            try:
                chore.run(self.metrics)
            except Exception as exc:  # noqa: BLE001 (e.g. the store is down: the next run catches up)
                self._error(f"chore_{chore.name}")
                log.warning("chore failed", exc_info=exc, extra={"chore": chore.name, "error": repr(exc)})
            finally:
                self.writing = None

    def write_sinks(self, h: Handled) -> Handled:
        """Write ``h``'s records to every sink, retrying a failing one with backoff (blocking; the heartbeat ``beat``
        goes on meanwhile, ``sink_ok`` of the sink is False until a write succeeds).

        A record a sink rejects turns ``h`` into a dead letter; a stop requested while
        retrying sets ``h.stop`` (the message must then not be acknowledged). The outputs of
        :meth:`tick` and :meth:`end_streams` have no message to redeliver: a sink's rejection of them is
        logged and counted, and the other sinks and the publishing still get them (a rejected alert still
        goes out on its topic and to the webhooks).
        """
        records = h.outputs.records
        if not records or h.dead_letter is not None or h.stop is not None:
            return h
        for sink in self.sinks:
            backoff = Backoff()
            while True:
                try:
                    self.writing = (sink.name, time.monotonic())
                    try:
                        sink.write(records)
                    finally:
                        self.writing = None
                    self.sink_ok[sink.name] = True
                    break
                except rejected_errors() as exc:
                    self._error("sink")
                    if h.topic in (TICK_TOPIC, END_STREAMS_TOPIC):
                        log.error("sink rejected a tick's (or the stop's) records; the other sinks still get them",
                                  extra={"stage": self.stage.name, "sink": sink.name, "error": repr(exc),
                                         "records": len(records)})
                        break
                    self._to_dead_letter(h, f"cannot store message: {exc!r}")
                    return h
                except Exception as exc:  # noqa: BLE001 (the store is down: wait and retry)
                    self.sink_ok[sink.name] = False
                    self._error(sink.name)
                    if self.should_stop():
                        h.stop = exc
                        return h
                    delay = backoff.next_delay()
                    log.warning("sink write failed; retrying", extra={"sink": sink.name, "error": str(exc),
                                                                       "retry_in_s": delay})
                    self._pause(delay)
        return h

    def _pause(self, delay_s: float) -> None:
        """Sleep ``delay_s`` before a sink's next try, beating the heartbeat every :data:`RETRY_BEAT_S`."""
        end = time.monotonic() + delay_s
        while True:
            self.beat()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, RETRY_BEAT_S))


class Runner:
    """Drives a :class:`RunnerCore` with a :class:`Transport` until the transport ends or a stop.

    ``hooks`` (optional) adapt the loop to a stage's recovery scheme (detect-track's
    state snapshots): ``skip(msg) -> bool`` before processing, ``after(handled)`` after
    the acknowledgement, ``close()`` at the end. ``observers`` see every handled
    message after its acknowledgement (results and metrics of the embedded mode).
    ``batch_max`` > 1 hands a stage with ``handle_batch`` up to that many messages of
    different cameras at once (see the module doc; never with the Kafka transport).
    """

    def __init__(self, core: RunnerCore, transport: Transport, should_stop: Callable[[], bool] | None = None,
                 hooks: Any = None, observers: Sequence[Callable[[Handled], None]] = (),
                 beat: Callable[[], None] = lambda: None, poll_s: float = 0.2, batch_max: int = 1,
                 limits: Mapping[str, int] | None = None) -> None:
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, not {batch_max}")
        self.core = core
        self.transport = transport
        self.should_stop = should_stop or threading.Event().is_set
        core.should_stop = self.should_stop
        self.hooks = hooks
        self.observers = list(observers)
        self.beat = beat
        self.poll_s = poll_s
        #: The exception that stopped the runner (None: ended normally).
        self.failure: BaseException | None = None
        #: Seconds between the stage's ticks (``None``: the stage has none).
        self.tick_s: float | None = getattr(core.stage, "tick_s", None) if hasattr(core.stage, "tick") else None
        self._next_tick = time.monotonic() + (self.tick_s or 0)
        #: Most messages per stage call (1 unless the stage has ``handle_batch``).
        self.batch_max = batch_max if hasattr(core.stage, "handle_batch") else 1
        #: Batch size -> how many stage calls had that many messages (only counted when batching).
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        #: A polled message that could not join the batch: handled first in the next turn (with its skip verdict).
        self._held: tuple[BusMessage, bool] | None = None
        #: Base topic -> ``max.message.bytes`` of the deployment's topic (a stage worker's look-up at its start,
        #: :func:`~storelens.runtime.workers.topic_limits`: lower than declared on a topic made elsewhere); a
        #: topic not in it: its declared limit.
        self.limits = dict(limits or {})

    def handle(self, msg: BusMessage) -> bool:
        """One message, start to end; False when the runner must stop (the message is not acknowledged)."""
        return self._handle(msg, None)

    def _skip(self, msg: BusMessage) -> bool:
        return self.hooks is not None and bool(self.hooks.skip(msg))

    def _handle(self, msg: BusMessage, skip: bool | None) -> bool:
        core, tr = self.core, self.transport
        core.metrics.messages_in.labels(msg.topic).inc()
        if skip is None:
            skip = self._skip(msg)
        if skip:
            core.metrics.duplicates.labels(msg.topic).inc()
            tr.ack(msg)
            return True
        t0 = time.perf_counter()
        return self._finish(core.process(msg, tr.base_topic(msg.topic)), t0)

    def handle_batch(self, msgs: Sequence[BusMessage]) -> bool:
        """Messages of one topic, each of another camera, in one stage call; then each one start to end, in
        order, like :meth:`handle`. False when the runner must stop (that message and the later ones are not
        acknowledged)."""
        core, tr = self.core, self.transport
        for msg in msgs:
            core.metrics.messages_in.labels(msg.topic).inc()
        t0 = time.perf_counter()
        hs = core.process_batch(msgs, tr.base_topic(msgs[0].topic))
        share_s = (time.perf_counter() - t0) / len(hs)  # each message's part of the stage call
        for h in hs:
            if not self._finish(h, time.perf_counter() - share_s):
                return False
        return True

    def _finish(self, h: Handled, t0: float) -> bool:
        """Sinks, dead letter, outputs, acknowledgement, hooks and observers of one processed message."""
        core, tr = self.core, self.transport
        msg = h.msg
        h = core.write_sinks(h)
        if h.stop is not None:
            self.failure = h.stop
            return False
        try:
            if h.dead_letter is not None:
                self._send(topics.DEAD_LETTER, msg.key, fitting_dead_letter(h.dead_letter))
            for p in h.outputs.publish:
                self._send_output(h, p.topic, topics.camera_key(p.camera_id), p.message)
        except BaseException as exc:  # e.g. UndeliveredError: the stage's state holds a frame not all published,
            self.failure = exc  # so no snapshot of it may be written (hooks check the failure); redelivered
            raise
        tr.ack(msg)
        core.metrics.seconds.labels(msg.topic).observe(time.perf_counter() - t0)
        if self.hooks is not None:
            self.hooks.after(h)
        for obs in self.observers:
            obs(h)
        return True

    def tick(self, now_ms: int) -> bool:
        """The stage's tick at wall time ``now_ms``: write and publish what it made; False when the runner must
        stop (a sink failed while stopping)."""
        h = self.core.tick(now_ms)
        if h is None:
            return True
        h = self.core.write_sinks(h)
        if h.stop is not None:
            self.failure = h.stop
            return False
        for p in h.outputs.publish:
            self._send_output(h, p.topic, topics.camera_key(p.camera_id), p.message)
        for obs in self.observers:
            obs(h)
        return True

    def _send(self, topic: str, key: bytes, message: Any, value: bytes | None = None) -> None:
        out = self.transport.publish(topic, key, m.encode(message) if value is None else value,
                                     headers=m.type_headers(message))
        self.core.metrics.messages_out.labels(out).inc()

    def _send_output(self, h: Handled, topic: str, key: bytes, message: Any) -> None:
        """Publish one output of ``h`` on ``topic`` (a base name), or the dead letter that replaces it when it is
        over the topic's limit (:func:`fit_output`, with :attr:`limits`): the same in both modes (the in-process
        bus has no limit of its own)."""
        name = getattr(self.transport, "topic", lambda base: base)(topic)  # Kafka: with kafka.topic_prefix
        out = fit_output(self.core, topic, name, key, message, self.limits, h.msg)
        self._send(out.topic, key, out.message, out.value)

    def _maybe_tick(self) -> bool:
        if self.tick_s is None or time.monotonic() < self._next_tick:
            return True
        self._next_tick = time.monotonic() + self.tick_s
        return self.tick(int(time.time() * 1000))

    def _turn(self, msg: BusMessage, skip: bool | None) -> bool:
        """Handle ``msg``, with the messages waiting behind it that may join its batch."""
        if self.batch_max == 1:
            return self._handle(msg, skip)
        skip = self._skip(msg) if skip is None else skip
        if skip:
            return self._handle(msg, True)
        batch = self._gather(msg)
        self.batch_sizes[len(batch)] += 1
        self.core.metrics.batch_size.labels(msg.topic).observe(len(batch))
        return self._handle(msg, False) if len(batch) == 1 else self.handle_batch(batch)

    def _gather(self, first: BusMessage) -> list[BusMessage]:
        """``first`` and the messages already waiting behind it on its topic, each of another camera (key), up to
        :attr:`batch_max`; the first one that cannot join is held back for the next turn."""
        tr = self.transport
        topic = tr.base_topic(first.topic)
        batch, keys = [first], {first.key}
        while len(batch) < self.batch_max:
            msg = tr.poll(0)  # no waiting: a batch is what has queued up while the last one was handled
            if msg is None:  # nothing waiting (or the in-process transport took an end-of-topic marker)
                break
            skip = self._skip(msg)
            if skip or tr.base_topic(msg.topic) != topic or msg.key in keys:
                self._held = (msg, skip)
                break
            batch.append(msg)
            keys.add(msg.key)
        return batch

    def run(self) -> BaseException | None:
        """Loop until the transport has ended, a stop was requested, or the stage failed; returns the failure."""
        try:
            while not self.should_stop() and (self._held is not None or not self.transport.ended):
                self.beat()
                self.core.run_chores()
                if not self._maybe_tick():
                    break
                if self._held is not None:
                    (msg, skip), self._held = self._held, None
                else:
                    msg, skip = self.transport.poll(min(self.poll_s, self.tick_s or self.poll_s)), None
                if msg is None:
                    continue
                if not self._turn(msg, skip):
                    break
        finally:
            try:
                if self.hooks is not None:
                    self.hooks.close()
            finally:
                self.transport.close()
        return self.failure
