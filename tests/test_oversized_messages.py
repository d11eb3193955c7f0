"""Messages too large for their topic neither lose what comes after them nor crash-loop a service.

* ingest: a frame over the ``frames`` topic's ``max.message.bytes`` (a 4K camera at ``jpeg_quality: 100`` without
  ``resize_width``) is encoded again at a lower JPEG quality, or skipped and counted when none fits; the camera's
  later frames arrive and the stop exits 0. Before, the producer took the frame, the broker refused it, and the
  idempotent producer's later batches of the partition were refused as out of sequence: every later frame of the
  partition was lost, and the stop's flush failed (exit 2).
* the bus: after a message the broker refused, the producer is replaced, so later messages of the same key arrive;
  a failure reported by ``flush_some`` (ingest's loop) does not fail the stop's ``flush``.
* the runner: an output over its topic's limit (a crop at ``crops.jpeg_quality: 100`` of a person close to a 4K
  camera, over ``person-crops``' 2 MiB) is a dead letter with reason ``too_large`` (payload cut, size and digest
  given) and the later outputs go on, in-process and on Kafka alike. Before, on Kafka the broker refused it and the
  next flush raised: detect-track exited and replayed the same frame after each restart (CrashLoopBackOff); the
  in-process bus has no limit, so the modes differed.

Real Kafka of the stack (``scripts/stack.sh up``), topics under a prefix of their own; payloads are noise made here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time

import cv2
import numpy as np
import pytest

from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime import kafka, workers
from storelens.runtime.bus import InProcessBus
from storelens.runtime.runner import DEAD_LETTER_KEPT_BYTES, Runner, RunnerCore, fitting_dead_letter
from storelens.runtime.transports import END_OF_TOPIC, ConsumerGroup, InProcessTransport, KafkaTransport
from storelens.stages.base import Outputs, Publish, decode_input
from test_bus import _kafka_cfg
from test_runtime_readiness import _delete_topics, _metric, _site, needs_kafka, started_runtime  # noqa: F401

MiB = 1024**2


def _video(path, size: tuple[int, int], noisy: list[bool]) -> str:
    """An MJPG video of ``size`` (w, h): a noise frame (a JPEG of it is large) where ``noisy``, else a flat one."""
    w, h = size
    rng = np.random.default_rng(7)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for noise in noisy:
        vw.write(rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise else np.full((h, w, 3), 128, np.uint8))
    vw.release()
    return str(path)


def _run(config, rt) -> tuple[threading.Thread, list]:
    result: list = []
    t = threading.Thread(target=lambda: result.append(workers.run_ingest(config, rt)), name="ingest-main",
                         daemon=True)
    t.start()
    return t, result


# (case, frame size, frames topic's max.message.bytes on the broker (None: as declared, 8 MiB), noise frames,
#  frame seqs expected on the topic, errors{reason} expected)
INGEST_CASES = [
    ("4k_reencoded", (3840, 2160), None, [True, False, False, False], [0, 1, 2, 3], {"too_large_reencoded": 1}),
    ("lower_topic_limit_reencoded", (320, 240), 100_000, [True, False, False, False], [0, 1, 2, 3],
     {"too_large_reencoded": 1}),
    ("skipped", (320, 240), 16 * 1024, [True, False, False, False], [1, 2, 3], {"too_large": 1}),
]


@needs_kafka
@pytest.mark.timeout(180)
@pytest.mark.parametrize("case,size,limit,noisy,delivered,errors", INGEST_CASES, ids=[c[0] for c in INGEST_CASES])
def test_ingest_frame_over_the_topic_limit_then_small_frames(tmp_path, started_runtime, caplog,  # noqa: F811
                                                             case, size, limit, noisy, delivered, errors):
    """A camera at ``jpeg_quality: 100`` without ``resize_width``: its first frame (noise) is over the frames topic's
    limit, the three after it are small. The big one is re-encoded smaller (same size) or skipped and counted; the
    three small ones arrive behind it; a clean stop returns 0 with its log line."""
    rt, cfg = started_runtime, _kafka_cfg()
    if limit is not None:  # a topic made (by hand, or before) with a lower limit than declared
        kafka.ensure_topics(cfg, [dataclasses.replace(topics.spec(topics.FRAMES), max_message_bytes=limit)])
    source = _video(tmp_path / "cam.avi", size, noisy)
    config = _site(cfg, [{"id": "cam", "source": source, "jpeg_quality": 100}])
    frames_topic = topics.topic_name(topics.FRAMES, cfg.topic_prefix)
    caplog.set_level(logging.INFO, logger="storelens.runtime.workers")
    thread, result = _run(config, rt)
    try:
        deadline, got = time.monotonic() + 60, []
        while not any(f.end_of_stream for f in got):
            assert time.monotonic() < deadline and thread.is_alive(), "the camera's end of stream never arrived"
            got = [m.decode(m.Frame, x.value) for x in kafka.consume_all(cfg, frames_topic, timeout_s=20)]
            time.sleep(0.2)
        images = [f for f in got if not f.end_of_stream]
        assert [f.seq for f in images] == delivered
        limit_bytes = limit or topics.spec(topics.FRAMES).max_message_bytes
        for f in images:
            img = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and (img.shape[1], img.shape[0]) == size == (f.width, f.height)
            assert topics.fits(limit_bytes, b"cam", m.encode(f), m.type_headers(f))
        for reason in ("too_large", "too_large_reencoded"):
            assert (_metric(rt, "storelens_errors_total", reason=reason) or 0) == errors.get(reason, 0), reason
        assert not _metric(rt, "storelens_delivery_errors_total", topic=frames_topic)
    finally:
        rt.stopping.set()
        thread.join(60)
        _delete_topics(cfg)
    assert result == [0]
    assert any(r.getMessage() == "ingest stopped" for r in caplog.records)


@needs_kafka
@pytest.mark.timeout(120)
def test_bus_replaces_its_producer_after_a_refused_message():
    """Through ingest's kind of bus (not sticky): a 9 MiB message on ``frames`` (limit 8 MiB; the producer takes up
    to 64 MiB) is refused by the broker, then three small ones with the same key arrive, on a new producer. The
    failure is counted and reported once, by ``flush_some`` (ingest's loop): the stop's ``flush`` does not fail."""
    cfg = _kafka_cfg()
    kafka.ensure_topics(cfg, [topics.spec(topics.FRAMES)])
    topic = topics.topic_name(topics.FRAMES, cfg.topic_prefix)
    failed_topics: list[str] = []
    bus = kafka.KafkaBus(cfg, "ingest", on_delivery_error=failed_topics.append)
    try:
        bus.publish(topic, b"cam", os.urandom(9 * MiB))
        deadline, reported = time.monotonic() + 60, 0
        while not reported:
            assert time.monotonic() < deadline, "the broker's refusal never came"
            reported = bus.flush_some(0.5)
        assert reported == 1 and failed_topics == [topic]
        for i in range(3):
            bus.publish(topic, b"cam", f"small-{i}".encode())
        bus.flush()  # before: BrokerError (the three refused out of sequence, and the first failure again)
        assert [x.value for x in kafka.consume_all(cfg, topic, timeout_s=20)] == [b"small-0", b"small-1", b"small-2"]
        assert bus.renewals == 1 and failed_topics == [topic]
    finally:
        bus.close()
        _delete_topics(cfg)


# -- the runner ------------------------------------------------------------------------------------------------------

CONFIG_CAMERAS = [{"id": "cam", "source": "x.mp4"}]


class Cropper:
    """A test stage: each frame's ``jpeg`` republished as a person crop (a big JPEG makes a big crop)."""

    name = "cropper"
    inputs = {topics.FRAMES: m.Frame}
    outputs = (topics.PERSON_CROPS,)
    on_error = "dead_letter"
    cameras = {"cam"}

    def decode(self, topic, value):
        return decode_input(self, topic, value)

    def handle(self, topic, frame):
        return Outputs(publish=[Publish(topics.PERSON_CROPS, frame.camera_id, m.PersonCrop(
            camera_id=frame.camera_id, seq=frame.seq, ts_ms=frame.ts_ms, track_id=1, jpeg=frame.jpeg))])


def _frames() -> list[bytes]:
    """Frame 0 makes a 2.5 MB crop (person-crops' limit: 2 MiB), frames 1-3 small ones."""
    big = os.urandom(2_500_000)
    return [m.encode(m.Frame(camera_id="cam", seq=s, ts_ms=1000 + s, jpeg=big if s == 0 else b"jpg-%d" % s))
            for s in range(4)]


def _check(crops: list[m.PersonCrop], letters: list[m.DeadLetter], big: bytes, runner: Runner,
           crops_topic: str = topics.PERSON_CROPS) -> None:
    """``crops_topic``: the deployment's name of person-crops (Kafka: with its prefix), as every dead letter's."""
    assert [c.seq for c in crops] == [1, 2, 3]
    assert len(letters) == 1, [dl.reason for dl in letters]
    (dl,) = letters
    crop = m.encode(m.PersonCrop(camera_id="cam", seq=0, ts_ms=1000, track_id=1, jpeg=big))
    assert dl.reason.startswith("too_large") and f"{len(crop)} bytes" in dl.reason, dl.reason
    assert hashlib.sha256(crop).hexdigest() in dl.reason and dl.payload == crop[:DEAD_LETTER_KEPT_BYTES]
    assert dl.key == b"cam" and dl.source_topic == crops_topic
    assert runner.failure is None and runner.core.errors.get("too_large") == 1 and runner.core.dead_letters == 1
    assert runner.core.metrics.dead_letters.labels(crops_topic)._value.get() == 1


def test_runner_dead_letters_an_output_over_its_topic_limit_in_process():
    bus = InProcessBus(maxsize=100)
    crops_sub, dead_sub = bus.subscribe(topics.PERSON_CROPS), bus.subscribe(topics.DEAD_LETTER)
    transport = InProcessTransport(bus, [topics.FRAMES], ending=[topics.FRAMES], outputs=[topics.PERSON_CROPS])
    frames = _frames()
    for v in frames:
        bus.publish(topics.FRAMES, b"cam", v)
    bus.publish(topics.FRAMES, b"", END_OF_TOPIC)
    runner = Runner(RunnerCore(Cropper()), transport)
    assert runner.run() is None

    def drain(sub):
        out = []
        while (msg := sub.poll(0)) is not None:
            out.append(msg)
        return out
    crops = [m.decode(m.PersonCrop, x.value) for x in drain(crops_sub) if x.value != END_OF_TOPIC]
    letters = [m.decode(m.DeadLetter, x.value) for x in drain(dead_sub)]
    _check(crops, letters, m.decode(m.Frame, frames[0]).jpeg, runner)


@needs_kafka
@pytest.mark.timeout(120)
def test_runner_dead_letters_an_output_over_its_topic_limit_on_kafka():
    cfg = _kafka_cfg().model_copy(update={"partitions": 1})
    kafka.ensure_topics(cfg, [topics.spec(t) for t in (topics.FRAMES, topics.PERSON_CROPS, topics.DEAD_LETTER)])
    transport = KafkaTransport(cfg, "cropper", [ConsumerGroup("cropper", (topics.FRAMES,), commit_every=1)])
    frames = _frames()
    try:
        for v in frames:
            transport.publish(topics.FRAMES, b"cam", v)
        transport.bus.flush()
        stop, handled, crashed = threading.Event(), [], []
        runner = Runner(RunnerCore(Cropper()), transport, should_stop=stop.is_set, poll_s=0.5)
        runner.observers.append(handled.append)

        def run() -> None:
            try:
                runner.run()
            except BaseException as exc:  # noqa: BLE001 (before the fix: BrokerError from a flush)
                crashed.append(exc)
        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 60
        while len(handled) < 4 and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        t.join(60)
        assert not crashed and transport.exit_code == 0, crashed
        crops = [m.decode(m.PersonCrop, v) for _, v, _ in
                 kafka.read_to_end(cfg, transport.topic(topics.PERSON_CROPS), 0, "check", 30)]
        letters = [m.decode(m.DeadLetter, v) for _, v, _ in
                   kafka.read_to_end(cfg, transport.topic(topics.DEAD_LETTER), 0, "check", 30)]
        _check(crops, letters, m.decode(m.Frame, frames[0]).jpeg, runner, transport.topic(topics.PERSON_CROPS))
    finally:
        _delete_topics(cfg)


def test_a_dead_letter_always_fits_its_topic():
    """A dead letter wrapping an input near 8 MiB (e.g. an undecodable frame) would be over the dead-letter topic's
    limit: its payload is cut, its size and digest noted, so it is never refused itself."""
    payload = os.urandom(8 * MiB - 100)
    dl = fitting_dead_letter(m.DeadLetter(source_topic="frames", key=b"cam", payload=payload, reason="decode: bad",
                                          service="detect-track", ts_ms=1))
    limit = topics.spec(topics.DEAD_LETTER).max_message_bytes
    assert topics.fits(limit, dl.key, m.encode(dl), m.type_headers(dl))
    assert dl.payload == payload[:DEAD_LETTER_KEPT_BYTES] and dl.reason.startswith("decode: bad; ")
    assert f"{len(payload)} bytes" in dl.reason and hashlib.sha256(payload).hexdigest() in dl.reason
    small = m.DeadLetter(source_topic="frames", key=b"cam", payload=b"x", reason="decode")
    assert fitting_dead_letter(small) is small
