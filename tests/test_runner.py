"""The one runner: its error policy, table-driven, in-process (no broker) and on Kafka; adding a stage.

Every row feeds one input message to a runner of a small stage defined here and
checks what the policy promises: what is published, what is dead-lettered with
which reason, what is retried, what stops the runner, and whether the message was
acknowledged. The same table runs over the in-process bus and over Kafka (real
broker, ``make test`` starts it), so both transports keep one behaviour.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid

import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import StorageError
from storelens.runtime.bus import InProcessBus
from storelens.runtime.runner import Runner, RunnerCore
from storelens.runtime.transports import END_OF_TOPIC, InProcessTransport
from storelens.stages.base import Outputs, Publish, decode_input
from storelens.stages.registry import STAGES, register_stage, unregister_stage, stages_for

CONFIG = parse_config({"store": {"id": "t"}, "cameras": [{"id": "cam", "source": "x.mp4"}]})
OUT = "test-clock"


class FrameClock:
    """A test stage: every frame's timestamp republished as an OccupancyUpdate, the frame kept as a record.

    ``jpeg`` tells it to misbehave: ``raise`` -> RuntimeError, ``store`` -> a store failure inside the stage.
    """

    name = "frame-clock"
    inputs = {topics.FRAMES: m.Frame}
    outputs = (OUT,)
    on_error = "dead_letter"

    def __init__(self, config, on_error: str = "dead_letter") -> None:
        self.cameras = {c.id for c in config.cameras}
        self.on_error = on_error

    def decode(self, topic, value):
        return decode_input(self, topic, value)

    def handle(self, topic, frame):
        if frame.jpeg == b"raise":
            raise RuntimeError("model exploded")
        if frame.jpeg == b"store":
            raise StorageError("gallery store unreachable")
        return Outputs(publish=[Publish(OUT, frame.camera_id, m.OccupancyUpdate(camera_id=frame.camera_id,
                                                                                 ts_ms=frame.ts_ms))],
                       records=[frame])


class FlakySink:
    """A sink failing ``fail`` times the way a down database does, or rejecting the record."""

    name = "storage"

    def __init__(self, fail: int = 0, reject: bool = False) -> None:
        self.fail, self.reject, self.written = fail, reject, []

    def write(self, records):
        if self.reject:
            raise ValueError("value out of range for column")
        if self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("database is locked")
        self.written += records


def frame(seq: int = 1, camera: str = "cam", jpeg: bytes = b"jpg") -> bytes:
    return m.encode(m.Frame(camera_id=camera, seq=seq, ts_ms=1000 + seq, jpeg=jpeg))


# (case, input bytes, stage on_error, sink, expected: published?, dead-letter reason part, error reason, stopped?)
CASES = [
    ("good", frame(), "dead_letter", FlakySink(), True, None, None, False),
    ("truncated protobuf", frame()[:-3], "dead_letter", FlakySink(), False, "cannot decode storelens.v1.Frame",
     "decode", False),
    ("unknown camera", frame(camera="lobby"), "dead_letter", FlakySink(), False, "unknown camera 'lobby'",
     "unknown_camera", False),
    ("stage error, dead_letter", frame(jpeg=b"raise"), "dead_letter", FlakySink(), False,
     "cannot process storelens.v1.Frame: RuntimeError('model exploded')", "process", False),
    ("stage error, stop", frame(jpeg=b"raise"), "stop", FlakySink(), False, None, "process", True),
    ("store inside the stage", frame(jpeg=b"store"), "dead_letter", FlakySink(), False, None, "store", True),
    ("sink down twice, retried", frame(), "dead_letter", FlakySink(fail=2), True, None, "storage", False),
    ("sink rejects the record", frame(), "dead_letter", FlakySink(reject=True), False, "cannot store message",
     "sink", False),
]


class Acks(InProcessTransport):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.acked = []

    def ack(self, msg) -> None:
        self.acked.append(msg.offset)


def check_outputs(outs, letters, published, dead_reason, value, source_topic) -> None:
    assert (len(outs) == 1) is published, outs
    if dead_reason is None:
        assert letters == []
    else:
        [dl] = letters
        assert dead_reason in dl.reason and dl.service == "frame-clock" and dl.payload == value
        assert dl.source_topic == source_topic


def _drain(sub) -> list:
    out = []
    while (msg := sub.poll(0)) is not None:
        out.append(msg)
    return out


@pytest.mark.parametrize("case,value,on_error,sink,published,dead_reason,error,stopped", CASES,
                         ids=[c[0] for c in CASES])
def test_error_policy_in_process(case, value, on_error, sink, published, dead_reason, error, stopped):
    bus = InProcessBus()
    stage = FrameClock(CONFIG, on_error)
    transport = Acks(bus, [topics.FRAMES], ending=[topics.FRAMES], outputs=stage.outputs)
    core = RunnerCore(stage, [sink])
    core_backoff_start = time.monotonic()
    out, dead = bus.subscribe(OUT), bus.subscribe(topics.DEAD_LETTER)
    bus.publish(topics.FRAMES, b"cam", value)
    bus.publish(topics.FRAMES, b"", END_OF_TOPIC)
    failure = Runner(core, transport).run()  # ends when frames has ended, or on a stop
    outs = [m.decode(m.OccupancyUpdate, x.value) for x in _drain(out) if x.value != END_OF_TOPIC]
    letters = [m.decode(m.DeadLetter, x.value) for x in _drain(dead)]
    check_outputs(outs, letters, published, dead_reason, value, topics.FRAMES)
    assert (failure is not None) is stopped
    assert transport.acked == ([] if stopped else [0]), "a message is acknowledged unless the runner stopped"
    assert set(core.errors) == ({error} if error else set()), core.errors
    if error == "storage":  # retried with backoff (0.2 + 0.4 s) and nothing lost
        assert core.errors["storage"] == 2 and len(sink.written) == 1
        assert time.monotonic() - core_backoff_start >= 0.6
        assert core.sink_ok["storage"]


def test_stop_requested_while_a_sink_is_down_leaves_the_message_unacknowledged():
    bus = InProcessBus()
    stage = FrameClock(CONFIG)
    transport = Acks(bus, [topics.FRAMES], ending=[topics.FRAMES], outputs=stage.outputs)
    stop = threading.Event()
    runner = Runner(RunnerCore(stage, [FlakySink(fail=10**6)]), transport, should_stop=stop.is_set)
    bus.publish(topics.FRAMES, b"cam", frame())
    t = threading.Thread(target=runner.run)
    t.start()
    time.sleep(1.0)
    assert t.is_alive(), "the runner waits for the store"
    stop.set()
    t.join(10)
    assert not t.is_alive() and transport.acked == [] and runner.failure is not None


class TickClock(FrameClock):
    """:class:`FrameClock` with a periodic tick: each tick's wall time as a record and on its topic."""

    tick_s = 1.0

    def tick(self, now_ms: int) -> Outputs:
        update = m.OccupancyUpdate(camera_id="cam", ts_ms=now_ms)
        return Outputs(publish=[Publish(OUT, "cam", update)], records=[update])


def test_a_tick_rejected_by_one_sink_still_reaches_the_other_sinks_and_its_topic():
    """A tick's outputs (e.g. ``camera_down`` alerts) have no message to dead-letter or redeliver: a sink that
    rejects them is logged and counted, and the next sink (e.g. the webhooks) and the topic still get them."""
    bus = InProcessBus()
    stage = TickClock(CONFIG)
    transport = Acks(bus, [topics.FRAMES], ending=[topics.FRAMES], outputs=stage.outputs)
    rejecting, hooks = FlakySink(reject=True), FlakySink()
    hooks.name = "webhooks"
    core = RunnerCore(stage, [rejecting, hooks])
    runner = Runner(core, transport)
    out, dead = bus.subscribe(OUT), bus.subscribe(topics.DEAD_LETTER)
    assert runner.tick(5000) and runner.failure is None
    assert [m.decode(m.OccupancyUpdate, x.value).ts_ms for x in _drain(out)] == [5000]
    assert [r.ts_ms for r in hooks.written] == [5000]
    assert _drain(dead) == [] and core.dead_letters == 0 and core.errors == {"sink": 1}
    rejecting.reject = False  # the runner goes on: the next tick is stored everywhere
    assert runner.tick(6000)
    assert [r.ts_ms for r in rejecting.written] == [6000] and [r.ts_ms for r in hooks.written] == [5000, 6000]


# -- batches: frames of different cameras in one stage call (the embedded mode's detect-track) -------------

CAMS3 = parse_config({"store": {"id": "t"}, "cameras": [{"id": c, "source": "x.mp4"} for c in "abc"]})


class BatchClock(FrameClock):
    """:class:`FrameClock` that also takes batches; ``calls`` records each call: a camera id for ``handle``, the
    list of camera ids for ``handle_batch``. A batch holding a ``raise`` frame fails as a whole."""

    def __init__(self, config, on_error: str = "dead_letter") -> None:
        super().__init__(config, on_error)
        self.calls: list = []

    def handle(self, topic, frame):
        self.calls.append(frame.camera_id)
        return super().handle(topic, frame)

    def handle_batch(self, topic, frames):
        self.calls.append([f.camera_id for f in frames])
        if any(f.jpeg == b"raise" for f in frames):
            raise RuntimeError("model exploded")
        return [FrameClock.handle(self, topic, f) for f in frames]


class SkipOffsets:
    """Runner hooks skipping the given offsets (as detect-track's snapshot hooks skip what a snapshot holds)."""

    def __init__(self, offsets=()) -> None:
        self.offsets, self.asked, self.done = set(offsets), [], []

    def skip(self, msg) -> bool:
        self.asked.append(msg.offset)
        return msg.offset in self.offsets

    def after(self, h) -> None:
        self.done.append(h.msg.offset)

    def close(self) -> None:
        return None


A1, A2, B1, B2, C1 = frame(1, "a"), frame(2, "a"), frame(1, "b"), frame(2, "b"), frame(1, "c")
BAD_B = frame(1, "b")[:-3]  # truncated protobuf

# (case, input frames, batch_max, stage on_error, offsets the hooks skip,
#  expected: stage calls, dead-lettered offsets, acknowledged offsets, stopped?)
BATCH_CASES = [
    ("a malformed message in the middle is only its own dead letter", [A1, BAD_B, C1, A2, B2], 3, "dead_letter", (),
     [["a", "c"], ["a", "b"]], [1], [0, 1, 2, 3, 4], False),
    ("two messages of one camera never share a batch", [A1, A2, B1, B2], 4, "dead_letter", (),
     ["a", ["a", "b"], "b"], [], [0, 1, 2, 3], False),
    ("batch_max caps the batch", [A1, B1, C1], 2, "dead_letter", (),
     [["a", "b"], "c"], [], [0, 1, 2], False),
    ("batch_max 1 (the services): one at a time", [A1, B1, C1], 1, "dead_letter", (),
     ["a", "b", "c"], [], [0, 1, 2], False),
    ("a failing batch of a dead_letter stage is handled one by one", [A1, frame(1, "b", b"raise"), C1], 3,
     "dead_letter", (), [["a", "b", "c"], "a", "b", "c"], [1], [0, 1, 2], False),
    ("a failing batch of a stop stage acknowledges nothing, not even its malformed message",
     [A1, BAD_B, frame(1, "c", b"raise")], 3, "stop", (), [["a", "c"]], [], [], True),
    ("a message the hooks skip is held back, never handled, still acknowledged", [A1, B1, C1, A2], 4,
     "dead_letter", (1,), ["a", ["c", "a"]], [], [0, 1, 2, 3], False),
]


@pytest.mark.parametrize("case,values,batch_max,on_error,skips,calls,dead,acked,stopped", BATCH_CASES,
                         ids=[c[0] for c in BATCH_CASES])
def test_batches_in_process(case, values, batch_max, on_error, skips, calls, dead, acked, stopped):
    bus = InProcessBus()
    stage = BatchClock(CAMS3, on_error)
    transport = Acks(bus, [topics.FRAMES], ending=[topics.FRAMES], outputs=stage.outputs)
    core = RunnerCore(stage, [FlakySink()])
    hooks = SkipOffsets(skips)
    out, letters = bus.subscribe(OUT), bus.subscribe(topics.DEAD_LETTER)
    for v in values:
        bus.publish(topics.FRAMES, m.decode(m.Frame, v).camera_id.encode() if v != BAD_B else b"b", v)
    bus.publish(topics.FRAMES, b"", END_OF_TOPIC)
    runner = Runner(core, transport, hooks=hooks, batch_max=batch_max)
    failure = runner.run()
    assert (failure is not None) is stopped
    assert stage.calls == calls
    assert [m.decode(m.DeadLetter, x.value).payload for x in _drain(letters)] == [values[i] for i in dead]
    assert core.dead_letters == len(dead)
    assert transport.acked == acked, "acknowledged in input order, unless the runner stopped"
    assert hooks.asked == sorted(set(hooks.asked)), "the hooks are asked once per message, in order"
    assert hooks.done == [o for o in acked if o not in skips]
    # outputs in input order: the handled frames' timestamps (camera, 1000 + seq)
    handled = [m.decode(m.Frame, values[o]) for o in acked if o not in dead and o not in skips]
    published = [m.decode(m.OccupancyUpdate, x.value) for x in _drain(out) if x.value != END_OF_TOPIC]
    assert [(u.camera_id, u.ts_ms) for u in published] == [(f.camera_id, f.ts_ms) for f in handled]
    sizes = dict(runner.batch_sizes)
    [hist] = core.metrics.batch_size.collect()
    samples = {s.name: s.value for s in hist.samples if s.labels.get("topic") == topics.FRAMES}
    assert samples.get("storelens_batch_size_count", 0) == sum(sizes.values())
    assert samples.get("storelens_batch_size_sum", 0) == sum(n * k for n, k in sizes.items())
    assert max(sizes, default=1) <= batch_max


# -- adding a stage: one module (here: the class above) plus one registration line ------------------------


@pytest.fixture
def registered_clock():
    register_stage("frame-clock", f"{__name__}:FrameClock")  # the one line
    yield
    unregister_stage("frame-clock")


def test_a_registered_stage_runs_in_the_embedded_pipeline(registered_clock, tmp_path):
    from storelens.paths import asset
    from storelens.runtime.embedded import EmbeddedPipeline

    assert "frame-clock" in [e.name for e in stages_for("embedded", CONFIG)]
    cfg = parse_config({"store": {"id": "t"}, "cameras": [{
        "id": "cam", "source": str(asset("mot", "TUD-Campus", "TUD-Campus.mp4")),
        "lines": [{"id": "x300", "a": [300, 480], "b": [300, 0]}]}]})
    bus = InProcessBus(maxsize=8)
    clock = bus.subscribe(OUT)
    seen = []

    def watch() -> None:  # drains the stage's topic (its bounded queue would otherwise fill up)
        while (msg := clock.poll(60)) is not None:
            seen.append(msg)
            if msg.value == END_OF_TOPIC:
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    res = EmbeddedPipeline(cfg, bus=bus).run()
    watcher.join(30)
    ticks = [m.decode(m.OccupancyUpdate, x.value) for x in seen if x.value != END_OF_TOPIC]
    assert res.frames == 71
    assert len(ticks) == 72  # every frame and the end-of-stream marker, from the stage registered in the test
    assert ticks[0].camera_id == "cam" and [t.ts_ms for t in ticks] == sorted(t.ts_ms for t in ticks)
    assert seen[-1].value == END_OF_TOPIC, "the stage ends its outputs when it has handled its inputs"


def test_builtin_stages_are_registered():
    assert list(STAGES)[:5] == ["detect-track", "faces", "attributes", "reid", "analytics"]


# -- the same policy on Kafka ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_cfg():
    from storelens.config import KafkaConfig
    from storelens.runtime.kafka import BrokerProbe

    cfg = KafkaConfig(bootstrap_servers=os.environ.get("STORELENS_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
                      topic_prefix=f"t-runner-{uuid.uuid4().hex[:8]}.", group_prefix=f"t-runner-{uuid.uuid4().hex[:8]}",
                      partitions=1)
    if not BrokerProbe(cfg)(5.0):
        pytest.fail(f"no Kafka at {cfg.bootstrap_servers}: `make test` starts it (scripts/stack.sh up)")
    return cfg


@pytest.mark.parametrize("case,value,on_error,sink,published,dead_reason,error,stopped", CASES,
                         ids=[c[0] for c in CASES])
def test_error_policy_on_kafka(kafka_cfg, case, value, on_error, sink, published, dead_reason, error, stopped):
    from storelens.contract.topics import TopicSpec
    from storelens.runtime.kafka import ensure_topics, read_to_end
    from storelens.runtime.transports import ConsumerGroup, KafkaTransport

    n = [c[0] for c in CASES].index(case)
    cfg = kafka_cfg.model_copy(update={"topic_prefix": f"{kafka_cfg.topic_prefix}{n}.",
                                       "group_prefix": f"{kafka_cfg.group_prefix}-{n}"})
    ensure_topics(cfg, [TopicSpec(t, "", 1, 3_600_000, partitions_fixed=True)
                        for t in (topics.FRAMES, OUT, topics.DEAD_LETTER)])
    stage = FrameClock(CONFIG, on_error)
    transport = KafkaTransport(cfg, "frame-clock", [ConsumerGroup("frame-clock", (topics.FRAMES,), commit_every=1)])
    transport.publish(topics.FRAMES, b"cam", value)
    transport.bus.flush()
    stop = threading.Event()
    runner = Runner(RunnerCore(stage, [sink]), transport, should_stop=stop.is_set, poll_s=0.5)
    handled = []
    runner.observers.append(handled.append)
    t = threading.Thread(target=runner.run)
    t.start()
    deadline = time.monotonic() + 60
    while not handled and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join(30)
    outs = read_to_end(cfg, transport.topic(OUT), 0, "check", 30)
    letters = [m.decode(m.DeadLetter, v) for _, v, _ in read_to_end(cfg, transport.topic(topics.DEAD_LETTER), 0,
                                                                   "check", 30)]
    check_outputs(outs, letters, published, dead_reason, value, transport.topic(topics.FRAMES))
    assert (runner.failure is not None) is stopped
    # acknowledged = committed: a new member of the group starts after the message, or at it when not acknowledged.
    # A marker published behind it tells the two apart without waiting out a timeout: the member's first message
    # is the marker when the message was committed, the message itself when not.
    transport.publish(topics.FRAMES, b"cam", b"marker")
    transport.bus.flush()
    again = KafkaTransport(cfg, "frame-clock-check", [ConsumerGroup("frame-clock", (topics.FRAMES,))])
    try:
        deadline, first = time.monotonic() + 30, None
        while first is None and time.monotonic() < deadline:
            first = again.poll(0.5)
        assert first is not None, "the marker published after the run never arrived"
        assert first.value == (value if stopped else b"marker")
    finally:
        again.close()
