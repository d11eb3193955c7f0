"""storelens.runtime.bus.InProcessBus and the storelens.contract.messages codec that rides on it."""
from __future__ import annotations

import os
import threading
import time

import pytest

from storelens.contract import messages as m
from storelens.runtime.bus import BusMessage, InProcessBus
from storelens.errors import DecodeError, StoreLensError

JOIN_S = 2.0  # generous upper bound for threads that should finish promptly


def drain(sub) -> list[BusMessage]:
    out = []
    while (msg := sub.poll(timeout_s=0)) is not None:
        out.append(msg)
    return out


def test_order_and_offsets_per_topic():
    bus = InProcessBus()
    frames, tracks = bus.subscribe("frames"), bus.subscribe("tracks")
    for i in range(5):
        bus.publish("frames", b"cam-1", f"f{i}".encode())
        bus.publish("tracks", b"cam-1", f"t{i}".encode())
    bus.publish("frames", b"cam-2", b"f5")
    got = drain(frames)
    assert [x.value for x in got] == [b"f0", b"f1", b"f2", b"f3", b"f4", b"f5"]
    assert [x.offset for x in got] == list(range(6))  # offsets are per topic
    assert all(x.topic == "frames" for x in got)
    assert [x.key for x in got] == [b"cam-1"] * 5 + [b"cam-2"]
    assert [x.value for x in drain(tracks)] == [f"t{i}".encode() for i in range(5)]
    assert bus.published("frames") == 6 and bus.published("tracks") == 5 and bus.published("other") == 0


def test_multiple_subscribers_each_get_every_message():
    bus = InProcessBus()
    subs = [bus.subscribe("crossings") for _ in range(3)]
    for i in range(10):
        bus.publish("crossings", b"k", bytes([i]))
    for sub in subs:
        assert [x.value for x in drain(sub)] == [bytes([i]) for i in range(10)]


def test_subscriber_sees_only_messages_after_subscribing():
    bus = InProcessBus()
    bus.publish("frames", b"k", b"before")
    sub = bus.subscribe("frames")
    bus.publish("frames", b"k", b"after")
    got = drain(sub)
    assert [x.value for x in got] == [b"after"]
    assert got[0].offset == 1


def test_publish_without_subscribers_is_fine():
    bus = InProcessBus(maxsize=1)
    for _ in range(5):  # no queue to fill, so nothing blocks
        bus.publish("nobody", b"k", b"v")
    assert bus.published("nobody") == 5
    bus.flush()


@pytest.mark.parametrize("timeout_s", [0, 0.05])
def test_poll_timeout_returns_none(timeout_s):
    sub = InProcessBus().subscribe("frames")
    t0 = time.monotonic()
    assert sub.poll(timeout_s=timeout_s) is None
    elapsed = time.monotonic() - t0
    assert elapsed >= timeout_s * 0.9
    assert elapsed < timeout_s + 0.5


def test_poll_waits_for_a_message_from_another_thread():
    bus = InProcessBus()
    sub = bus.subscribe("frames")
    t = threading.Timer(0.05, bus.publish, args=("frames", b"k", b"late"))
    t.start()
    try:
        msg = sub.poll(timeout_s=JOIN_S)
    finally:
        t.join(JOIN_S)
    assert msg is not None and msg.value == b"late"


def test_back_pressure_blocks_publisher_until_consumer_polls():
    bus = InProcessBus(maxsize=2)
    sub = bus.subscribe("frames")
    bus.publish("frames", b"k", b"0")
    bus.publish("frames", b"k", b"1")  # queue is now full
    published = threading.Event()

    def producer():
        bus.publish("frames", b"k", b"2")
        published.set()

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    assert not published.wait(0.2), "publisher should block while the subscriber's queue is full"
    assert t.is_alive()
    assert len(sub) == 2
    assert sub.poll(timeout_s=0).value == b"0"  # frees one slot
    assert published.wait(JOIN_S), "publisher should resume once the consumer polled"
    t.join(JOIN_S)
    assert not t.is_alive()
    assert [x.value for x in drain(sub)] == [b"1", b"2"]


def test_back_pressure_slow_subscriber_holds_back_producer_not_others():
    bus = InProcessBus(maxsize=1)
    fast, slow = bus.subscribe("t"), bus.subscribe("t")
    bus.publish("t", b"k", b"0")
    done = threading.Event()

    def producer():
        bus.publish("t", b"k", b"1")
        done.set()

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    assert fast.poll(timeout_s=0).value == b"0"
    assert not done.wait(0.2), "the slow subscriber's full queue must still hold the producer back"
    assert slow.poll(timeout_s=0).value == b"0"
    assert done.wait(JOIN_S)
    t.join(JOIN_S)
    assert fast.poll(timeout_s=0).value == b"1" and slow.poll(timeout_s=0).value == b"1"


def test_producer_consumer_threads_keep_order():
    bus = InProcessBus(maxsize=4)
    sub = bus.subscribe("frames")
    n = 500
    received: list[int] = []

    def consumer():
        while len(received) < n:
            msg = sub.poll(timeout_s=JOIN_S)
            if msg is None:
                return
            received.append(int(msg.value))

    c = threading.Thread(target=consumer, daemon=True)
    c.start()
    for i in range(n):
        bus.publish("frames", b"cam-1", str(i).encode())
    c.join(JOIN_S * 2)
    assert not c.is_alive()
    assert received == list(range(n))


def test_maxsize_zero_is_unbounded():
    bus = InProcessBus(maxsize=0)
    sub = bus.subscribe("t")
    for i in range(1000):
        bus.publish("t", b"k", b"x")
    assert len(sub) == 1000


# ---------------------------------------------------------------------------------------------
# Protobuf messages over the bus
# ---------------------------------------------------------------------------------------------

MESSAGES = [
    pytest.param(m.Frame(camera_id="cam-1", seq=3, ts_ms=1_767_225_600_120, jpeg=b"\xff\xd8jpeg\xff\xd9",
                         width=640, height=360, source_frame=4, source_width=1920, source_height=1080),
                 id="frame"),
    pytest.param(m.Frame(camera_id="cam-1", seq=9, end_of_stream=True), id="frame_end_of_stream"),
    pytest.param(m.TrackedFrame(camera_id="cam-1", seq=3, ts_ms=120, width=1920, height=1080, tracks=[
        m.Track(track_id=7, bbox_xyxy=m.BoxXYXY(x1=10, y1=20, x2=30.5, y2=100), confidence=0.75, class_id=0),
        m.Track(track_id=2**40, bbox_xyxy=m.BoxXYXY(x1=1, y1=2, x2=3, y2=4), confidence=0.5),
    ]), id="tracked_frame"),
    pytest.param(m.PersonCrop(camera_id="cam-1", seq=3, ts_ms=120, track_id=7, jpeg=b"crop",
                              bbox_xyxy=m.BoxXYXY(x1=1, y1=2, x2=3, y2=4)), id="person_crop"),
    pytest.param(m.LineCrossing(event_id="cam-1:door:7:3", camera_id="cam-1", line_id="door", track_id=7,
                                direction=m.DIRECTION_OUT, ts_ms=120, seq=3), id="line_crossing"),
    pytest.param(m.OccupancyUpdate(camera_id="cam-1", ts_ms=120, occupancy=4, total_in=9, total_out=5),
                 id="occupancy"),
    pytest.param(m.CountWindow(camera_id="cam-1", line_id="door", window_start_ms=60_000, window_end_ms=120_000,
                               count_in=3, count_out=1), id="count_window"),
    pytest.param(m.DeadLetter(source_topic="frames", key=b"cam-1", payload=b"\xff\xff\xff", reason="bad",
                              service="detect-track", ts_ms=5), id="dead_letter"),
    pytest.param(m.Frame(), id="empty_frame"),
]


@pytest.mark.parametrize("msg", MESSAGES)
def test_message_round_trip_over_bus(msg):
    bus = InProcessBus()
    sub = bus.subscribe("topic")
    bus.publish("topic", msg.camera_id.encode() if hasattr(msg, "camera_id") else b"", m.encode(msg))
    got = sub.poll(timeout_s=0)
    assert isinstance(got.value, bytes)
    back = m.decode(type(msg), got.value)
    assert back == msg
    assert m.encode(back) == m.encode(msg)


@pytest.mark.parametrize(
    "cls, data",
    [
        pytest.param(m.Frame, b"\xff\xff\xff", id="frame_garbage"),
        pytest.param(m.LineCrossing, b"\xff\xff\xff", id="crossing_garbage"),
        pytest.param(m.Frame, b"\x0a\x05ab", id="frame_truncated_string"),
        pytest.param(m.TrackedFrame, b"\x32\x10\x08", id="tracked_frame_truncated_submessage"),
        pytest.param(m.Frame, b"\x08", id="frame_truncated_varint"),
    ],
)
def test_decode_garbage_raises_decode_error(cls, data):
    with pytest.raises(DecodeError, match=cls.DESCRIPTOR.full_name) as exc:
        m.decode(cls, data)
    assert isinstance(exc.value, StoreLensError)


def test_decode_empty_bytes_is_default_message():
    assert m.decode(m.Frame, b"") == m.Frame()


@pytest.mark.parametrize(
    "direction, name",
    [(m.DIRECTION_IN, "in"), (m.DIRECTION_OUT, "out"), (0, "unspecified"), (99, "unspecified")],
    ids=["in", "out", "unspecified", "unknown_number"],
)
def test_direction_name(direction, name):
    assert m.direction_name(direction) == name


def test_concurrent_publishers_keep_offset_order():
    """Every subscriber sees a topic's messages in offset order, whatever thread published them."""
    import threading

    from storelens.runtime.bus import InProcessBus

    bus = InProcessBus(maxsize=4)
    subs = [bus.subscribe("t"), bus.subscribe("t")]
    n_threads, per_thread = 4, 200

    def produce(k: int) -> None:
        for i in range(per_thread):
            bus.publish("t", str(k).encode(), str(i).encode())

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(n_threads)]
    seen: list[list] = [[], []]

    def consume(j: int) -> None:
        while len(seen[j]) < n_threads * per_thread:
            msg = subs[j].poll(timeout_s=5)
            assert msg is not None
            seen[j].append(msg)

    consumers = [threading.Thread(target=consume, args=(j,)) for j in range(2)]
    for t in consumers + threads:
        t.start()
    for t in consumers + threads:
        t.join(timeout=30)
    for j in range(2):
        assert [m.offset for m in seen[j]] == list(range(n_threads * per_thread))
        for k in range(n_threads):  # per key, publish order is kept
            assert [int(m.value) for m in seen[j] if m.key == str(k).encode()] == list(range(per_thread))


# -- the Kafka transport (needs the stack: scripts/stack.sh up, as `make test` does) -------------------

def _kafka_cfg():
    import os
    import uuid

    from storelens.config import KafkaConfig

    run = uuid.uuid4().hex[:10]
    return KafkaConfig(bootstrap_servers=os.environ.get("STORELENS_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
                       group_prefix=f"test-bus-{run}", topic_prefix=f"test-bus-{run}.", partitions=2)


@pytest.mark.timeout(180)
def test_kafka_rebalance_hooks_run_on_the_polling_thread_and_commit_before_hand_over():
    """A blocking on_revoke (publish, flush, commit: as detect-track's snapshot) runs on the thread
    that polls, and the offsets of the messages marked done are committed before the other member
    gets the partitions; the member that takes over starts right after them."""
    from storelens.contract.topics import FRAMES, TOPICS, topic_name
    from storelens.runtime.kafka import KafkaAdmin, KafkaBus, KafkaConsumer, consume_all, ensure_topics

    cfg = _kafka_cfg()
    ensure_topics(cfg, [s for s in TOPICS if s.name in (FRAMES, "dead-letter")])
    topic, side = topic_name(FRAMES, cfg.topic_prefix), topic_name("dead-letter", cfg.topic_prefix)
    bus = KafkaBus(cfg, "test")
    try:
        for i in range(40):
            bus.publish(topic, f"cam-{i % 4}".encode(), str(i).encode())
        bus.flush()
        threads: dict[str, set[str]] = {"assign": set(), "revoke": set()}
        seen_a: dict[int, list[int]] = {}

        def on_revoke(parts):
            threads["revoke"].add(threading.current_thread().name)
            for _t, p in parts:  # a snapshot: publish, flush, then commit (all through the event loop)
                bus.publish(side, b"snap", str(p).encode())
            bus.flush()
            a.commit()

        def run_a(stop: threading.Event) -> None:
            while not stop.is_set():
                msg = a.poll(0.2)
                if msg is not None and len(sum(seen_a.values(), [])) < 15:
                    seen_a.setdefault(msg.partition, []).append(msg.offset)
                    a.done()

        a = KafkaConsumer(cfg, "g", [topic], bus=bus, commit_every=10**9, commit_interval_s=float("inf"),
                          on_assign=lambda p: threads["assign"].add(threading.current_thread().name),
                          on_revoke=on_revoke)
        stop = threading.Event()
        worker = threading.Thread(target=run_a, args=(stop,), name="worker-a")
        worker.start()
        deadline = time.monotonic() + 60
        while len(sum(seen_a.values(), [])) < 15 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(sum(seen_a.values(), [])) == 15
        b = KafkaConsumer(cfg, "g", [topic])  # joins: a's partitions are revoked, then split
        seen_b: dict[int, list[int]] = {}
        deadline = time.monotonic() + 60
        while not b.assigned and time.monotonic() < deadline:
            msg = b.poll(0.2)
            if msg is not None:
                seen_b.setdefault(msg.partition, []).append(msg.offset)
        assert b.assigned and threads["revoke"] == {"worker-a"} and threads["assign"] == {"worker-a"}
        for _ in range(20):
            msg = b.poll(0.2)
            if msg is not None:
                seen_b.setdefault(msg.partition, []).append(msg.offset)
        for p, offsets in seen_b.items():  # b resumes exactly after what a marked done
            assert offsets[0] == (max(seen_a[p]) + 1 if p in seen_a else 0)
        assert {m.value for m in consume_all(cfg, side, expect=1, timeout_s=10)} >= {b"0", b"1"} & {
            str(p).encode() for p in seen_a}
        stop.set()
        worker.join(30)
        b.close()
        a.close()
    finally:
        bus.close()
        admin = KafkaAdmin(cfg)
        admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(cfg.topic_prefix)])
        admin.close()


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.timeout(400)
def test_kafka_flush_rides_through_a_broker_outage_beating_meanwhile():
    """Messages pending while the broker is down: a flush with a short timeout raises
    UndeliveredError (nothing is dropped), a default flush waits in slices, beating the heartbeat with
    the bus marked as waiting, and returns once the broker is back; every message arrives once."""
    import pathlib
    import subprocess

    from storelens.contract.topics import FRAMES, TOPICS, topic_name
    from storelens.runtime.kafka import FLUSH_SLICE_S, KafkaBus, UndeliveredError, consume_all, ensure_topics

    stack = str(pathlib.Path(__file__).resolve().parents[1] / "scripts" / "stack.sh")
    cfg = _kafka_cfg()
    ensure_topics(cfg, [s for s in TOPICS if s.name == FRAMES])
    topic = topic_name(FRAMES, cfg.topic_prefix)
    beats: list[float | None] = []
    bus = KafkaBus(cfg, "test", heartbeat=lambda: beats.append(bus.waiting_since))
    try:
        bus.publish(topic, b"cam-1", b"before")
        bus.flush()
        subprocess.run([stack, "stop", "kafka"], check=True, timeout=120)
        restart = threading.Timer(2.5 * FLUSH_SLICE_S,
                                  lambda: subprocess.run([stack, "start", "kafka"], check=True, timeout=180))
        try:
            bus.publish(topic, b"cam-1", b"during-1")
            with pytest.raises(UndeliveredError, match="1 messages still undelivered"):
                bus.flush(timeout_s=2)
            assert bus.waiting_since is None and beats == []  # one slice: no wait marked, no beat
            bus.publish(topic, b"cam-1", b"during-2")
            restart.start()
            t0 = time.monotonic()
            bus.flush()
            waited = time.monotonic() - t0
        finally:
            restart.join(240)
            subprocess.run([stack, "start", "kafka"], check=True, timeout=180)  # idempotent
        assert waited > 2 * FLUSH_SLICE_S, waited
        assert len(beats) >= 2 and all(since is not None for since in beats), beats
        assert bus.waiting_since is None
        got = consume_all(cfg, topic, timeout_s=60, expect=3, settle_s=1)
        assert sorted(x.value for x in got) == [b"before", b"during-1", b"during-2"]
    finally:
        bus.close()


def _committed(cfg, group: str) -> dict[int, int]:
    """The group's committed offsets by partition (read from the broker)."""
    from storelens.runtime.kafka import KafkaAdmin

    admin = KafkaAdmin(cfg)
    try:
        got = admin.call(lambda a: a.list_consumer_group_offsets(group))
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in got.items() if om.offset >= 0}


@pytest.mark.timeout(180)
def test_kafka_commit_of_one_partition_leaves_the_others_uncommitted():
    """detect-track commits a partition with that partition's snapshot: ``commit(partitions)`` commits the done
    offsets of those partitions only (before, every partition's: past the other partitions' snapshots), and a
    consumer made with ``commit_on_revoke=False`` commits nothing more when it is closed."""
    from storelens.contract.topics import FRAMES, TOPICS, topic_name
    from storelens.runtime.kafka import KafkaAdmin, KafkaBus, KafkaConsumer, ensure_topics

    cfg = _kafka_cfg()
    ensure_topics(cfg, [s for s in TOPICS if s.name == FRAMES])
    topic = topic_name(FRAMES, cfg.topic_prefix)
    bus = KafkaBus(cfg, "test")
    try:
        for i in range(40):
            bus.publish(topic, f"cam-{i % 8}".encode(), str(i).encode())
        bus.flush()
        a = KafkaConsumer(cfg, "g", [topic], bus=bus, commit_every=10**9, commit_interval_s=float("inf"),
                          commit_on_revoke=False)
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while sum(seen.values()) < 40 and time.monotonic() < deadline:
            msg = a.poll(0.2)
            if msg is not None:
                seen[msg.partition] = seen.get(msg.partition, 0) + 1
                a.done()
        assert sorted(seen) == [0, 1] and sum(seen.values()) == 40, seen  # both partitions have messages
        a.commit({(topic, 0)})
        assert _committed(cfg, a.group) == {0: seen[0]}
        a.close()
        assert _committed(cfg, a.group) == {0: seen[0]}  # partition 1 stays where its (absent) snapshot is
        b = KafkaConsumer(cfg, "h", [topic], bus=bus, commit_every=10**9, commit_interval_s=float("inf"))
        n, deadline = 0, time.monotonic() + 60
        while n < 40 and time.monotonic() < deadline:
            if b.poll(0.2) is not None:
                n += 1
                b.done()
        b.close()  # commit_on_revoke (the default): the revoked partitions' done offsets
        assert _committed(cfg, b.group) == seen
    finally:
        bus.close()
        admin = KafkaAdmin(cfg)
        admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(cfg.topic_prefix)])
        admin.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sticky", [True, False], ids=["stage-bus", "api-publisher"])
def test_kafka_a_failed_delivery_fails_every_later_flush_of_a_stage_bus(sticky):
    """A message the broker refuses (larger than its topic allows): the next flush raises BrokerError. A stage's
    bus (``sticky_failures``, as its transport makes it) raises at every later flush too, so no later commit goes
    past the lost output (before, the second flush, at shutdown, passed and committed); the API's publisher reports
    it once (that request answers 503 and is retried)."""
    from storelens.contract.topics import TOPICS, TRACKS, topic_name
    from storelens.runtime.kafka import KafkaAdmin, KafkaBus, BrokerError, ensure_topics

    cfg = _kafka_cfg()
    ensure_topics(cfg, [s for s in TOPICS if s.name == TRACKS])  # 1 MiB a message at most
    topic = topic_name(TRACKS, cfg.topic_prefix)
    bus = KafkaBus(cfg, "test", sticky_failures=sticky)
    try:
        bus.publish(topic, b"cam-1", os.urandom(1_500_000))  # random: lz4 cannot shrink it under the limit
        with pytest.raises(BrokerError, match="1 messages failed delivery"):
            bus.flush(timeout_s=60)
        bus.publish(topic, b"cam-1", b"small")
        if sticky:
            with pytest.raises(BrokerError, match="must restart"):
                bus.flush(timeout_s=60)
        else:
            bus.flush(timeout_s=60)
    finally:
        try:
            bus.close()
        except BrokerError:
            pass
        admin = KafkaAdmin(cfg)
        admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(cfg.topic_prefix)])
        admin.close()
