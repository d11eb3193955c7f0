"""Every bus message names its protobuf type in the ``message-type`` header, and the runner checks it before decoding.

The bug: protobuf parsing is lenient, so a ``Frame`` published to ``person-crops`` (a misconfigured producer, a
topic-name typo) decoded as a ``PersonCrop`` whose ``end_of_stream`` is set (the Frame's ``source_frame``, field 7),
and the faces stage ended the camera's open tracks. Now:

1. in-process bus, the embedded faces stage (real models, a real face photo): the Frame is a dead letter naming
   both types and the open track stays open; a PersonCrop with the header and one without any header (an older
   producer) are still processed; what the runner publishes carries its own type header;
2. real Kafka (``scripts/stack.sh up``, topics of a namespace of their own): the headers survive the round trip
   through ``KafkaBus.publish`` and the consumer, and the Frame on the crops topic is dead-lettered there too;
3. the faust analytics service (a subprocess of this checkout, PostgreSQL and Redis of the stack) checks the
   records' headers with the same runner core and sends its outputs with theirs.
"""
from __future__ import annotations

import functools
import os
import pathlib
import threading
import time
import uuid
from types import SimpleNamespace

import cv2
import pytest

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime.bus import InProcessBus
from storelens.runtime.runner import Runner, RunnerCore
from storelens.runtime.transports import END_OF_TOPIC, InProcessTransport
from storelens.stages.faces import AttributesStage, FacesStage, ReidStage
from storelens.storage.gallery import FaceGallery, SqliteGalleryStore
from test_analytics_app import env  # noqa: F401 (the analytics service's site, topics, stores; cleaned up after)

FACES = asset("faces")
OBAMA = FACES / "identities" / "obama" / "obama.jpg"
T0 = 1_767_225_600_000
PERSON_CROP = (("message-type", b"storelens.v1.PersonCrop"),)


def config(tmp):
    # five faces per reid decision: the track stays undecided (open) over this test's two crops
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
                         "storage": {"path": str(tmp / "h.db")},
                         "faces": {"enabled": True, "reid": {"faces_per_decision": 5}}})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The models, loaded once: face detector and attribute analyzer (as ``faces`` configures them), embedder."""
    from storelens.backends.face_embedders import build_embedder

    if not OBAMA.is_file():
        pytest.skip("shared face assets not found")
    attributes = AttributesStage(config(tmp_path_factory.mktemp("models")))
    return SimpleNamespace(detector=attributes.finder.detector, analyzer=attributes.analyzer,
                           embedder=build_embedder(attributes.config.faces.embedder))


def faces_stage(tmp_path, models) -> FacesStage:
    """The embedded faces stage (attributes and reid) over a gallery of its own."""
    cfg = config(tmp_path)
    gallery = FaceGallery(cfg.faces.gallery, store=SqliteGalleryStore(tmp_path / "gallery.db"))
    return FacesStage(AttributesStage(cfg, analyzer=models.analyzer, detector=models.detector),
                      ReidStage(cfg, gallery, embedder=models.embedder, detector=models.detector))


@functools.lru_cache(maxsize=None)
def face_jpeg() -> tuple[bytes, int, int]:
    img = cv2.imread(str(OBAMA))
    h, w = img.shape[:2]
    return cv2.imencode(".jpg", img)[1].tobytes(), w, h


def crop(seq: int) -> m.PersonCrop:
    jpeg, w, h = face_jpeg()
    return m.PersonCrop(camera_id="door", seq=seq, ts_ms=T0 + seq * 100, track_id=7,
                        bbox_xyxy=m.BoxXYXY(x1=100, y1=50, x2=100 + w, y2=50 + h), jpeg=jpeg)


def stray_frame(seq: int) -> m.Frame:
    """A frame of camera door, as ingest publishes it: on ``person-crops`` it reads as an end-of-stream crop."""
    return m.Frame(camera_id="door", seq=seq, ts_ms=T0 + seq * 100, jpeg=b"\xff\xd8\xff\xe0" + bytes(64), width=640,
                   height=480, source_frame=seq + 1, source_width=640, source_height=480)


def track_open(stage: FacesStage) -> bool:
    """Whether track 7 of camera door is still open in both halves of the faces stage."""
    return 7 in stage.attributes._agg["door"].track_ids() and ("door", 7) in stage.reid._tracks


def check_dead_letter(dl: m.DeadLetter, payload: bytes, source_topic: str) -> None:
    assert dl.reason == ("wrong message type: storelens.v1.Frame, where storelens.v1.PersonCrop is expected "
                         "(header message-type)")
    assert dl.payload == payload and dl.source_topic == source_topic and dl.service == "faces"


def test_the_premise_a_frame_parses_as_an_end_of_stream_crop():
    """Without the header nothing tells the two apart: the bytes of a Frame decode as a PersonCrop that ends the
    camera's stream (why the type must be checked before decoding, not after)."""
    wrong = m.decode(m.PersonCrop, m.encode(stray_frame(3)))
    assert wrong.camera_id == "door" and wrong.end_of_stream


def _drain(sub) -> list:
    out = []
    while (msg := sub.poll(0)) is not None:
        if msg.value != END_OF_TOPIC:
            out.append(msg)
    return out


def test_in_process_a_frame_on_the_crops_topic_is_a_dead_letter_and_ends_no_track(tmp_path, models):
    stage = faces_stage(tmp_path, models)
    bus = InProcessBus()
    transport = InProcessTransport(bus, list(stage.inputs), ending=[topics.PERSON_CROPS], outputs=stage.outputs)
    core = RunnerCore(stage)
    dead, summaries = bus.subscribe(topics.DEAD_LETTER), bus.subscribe(topics.TRACK_ATTRIBUTES)
    first, frame, second = crop(1), stray_frame(2), crop(3)
    bus.publish(topics.PERSON_CROPS, b"door", m.encode(first), headers=m.type_headers(first))
    bus.publish(topics.PERSON_CROPS, b"door", m.encode(frame), headers=m.type_headers(frame))
    bus.publish(topics.PERSON_CROPS, b"door", m.encode(second))  # no header: an older producer
    bus.publish(topics.PERSON_CROPS, b"", END_OF_TOPIC)
    handled = []
    runner = Runner(core, transport, observers=[handled.append])
    assert runner.run() is None

    assert [h.msg.headers for h in handled] == [PERSON_CROP, m.type_headers(m.Frame), ()]
    [letter] = _drain(dead)
    check_dead_letter(m.decode(m.DeadLetter, letter.value), m.encode(frame), topics.PERSON_CROPS)
    assert letter.headers == (("message-type", b"storelens.v1.DeadLetter"),)
    assert core.errors == {"message_type": 1} and core.dead_letters == 1
    # the two crops (with and without the header) were processed: one face each, the track still open
    out = _drain(summaries)
    assert all(x.headers == (("message-type", b"storelens.v1.TrackAttributes"),) for x in out)
    got = [m.decode(m.TrackAttributes, x.value) for x in out]
    assert [(s.track_id, s.n_faces, s.final) for s in got] == [(7, 1, False), (7, 2, False)]
    assert track_open(stage), "the stray frame ended the camera's open track"


def test_a_batch_dead_letters_only_the_message_of_the_wrong_type(tmp_path, models):
    """``RunnerCore.process_batch`` checks each message's header too: the stray frame is its own dead letter."""
    from storelens.runtime.bus import BusMessage

    class Batching(FacesStage):
        def handle_batch(self, topic, messages):
            return [self.handle(topic, d) for d in messages]

    base = faces_stage(tmp_path, models)
    stage = Batching(base.attributes, base.reid)
    core = RunnerCore(stage)
    good, frame = crop(1), stray_frame(2)
    hs = core.process_batch([BusMessage(topics.PERSON_CROPS, b"door", m.encode(good), 0, 0, m.type_headers(good)),
                             BusMessage(topics.PERSON_CROPS, b"door", m.encode(frame), 1, 0, m.type_headers(frame))],
                            topics.PERSON_CROPS)
    assert hs[0].dead_letter is None and hs[0].value.crop == good
    check_dead_letter(hs[1].dead_letter, m.encode(frame), topics.PERSON_CROPS)
    assert track_open(stage) and core.errors == {"message_type": 1}


# -- real Kafka ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_cfg():
    from storelens.config import KafkaConfig
    from storelens.runtime.kafka import BrokerProbe

    run = uuid.uuid4().hex[:8]
    cfg = KafkaConfig(bootstrap_servers=os.environ.get("STORELENS_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
                      topic_prefix=f"t-msgtype-{run}.", group_prefix=f"t-msgtype-{run}", partitions=1)
    if not BrokerProbe(cfg)(5.0):
        pytest.skip(f"no Kafka at {cfg.bootstrap_servers} (scripts/stack.sh up)")
    yield cfg
    from storelens.runtime.kafka import KafkaAdmin

    admin = KafkaAdmin(cfg)
    try:
        admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(cfg.topic_prefix)])
    finally:
        admin.close()


def test_on_kafka_the_header_round_trips_and_a_frame_on_the_crops_topic_is_a_dead_letter(tmp_path, models,
                                                                                           kafka_cfg):
    from storelens.contract.topics import TopicSpec
    from storelens.runtime.kafka import consume_all, ensure_topics
    from storelens.runtime.transports import ConsumerGroup, KafkaTransport

    stage = faces_stage(tmp_path, models)
    ensure_topics(kafka_cfg, [TopicSpec(t, "", 1, 3_600_000, partitions_fixed=True)
                              for t in (topics.PERSON_CROPS, topics.DEAD_LETTER, *stage.outputs)])
    transport = KafkaTransport(kafka_cfg, "faces", [ConsumerGroup("faces", (topics.PERSON_CROPS,), commit_every=1)])
    first, frame, second = crop(1), stray_frame(2), crop(3)
    crops = transport.topic(topics.PERSON_CROPS)
    transport.bus.publish(crops, b"door", m.encode(first), headers=m.type_headers(first))
    transport.bus.publish(crops, b"door", m.encode(frame), headers=m.type_headers(frame))
    transport.bus.publish(crops, b"door", m.encode(second))  # no header: an older producer
    transport.bus.flush()
    stop = threading.Event()
    handled = []
    runner = Runner(RunnerCore(stage), transport, should_stop=stop.is_set, observers=[handled.append], poll_s=0.5)
    t = threading.Thread(target=runner.run)
    t.start()
    deadline = time.monotonic() + 90
    while len(handled) < 3 and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join(60)
    assert runner.failure is None and len(handled) == 3

    # the consumer hands over the record headers as published
    assert [h.msg.headers for h in handled] == [PERSON_CROP, m.type_headers(m.Frame), ()]
    [letter] = consume_all(kafka_cfg, transport.topic(topics.DEAD_LETTER))
    check_dead_letter(m.decode(m.DeadLetter, letter.value), m.encode(frame), crops)
    assert letter.headers == (("message-type", b"storelens.v1.DeadLetter"),)
    out = consume_all(kafka_cfg, transport.topic(topics.TRACK_ATTRIBUTES))
    assert out and all(x.headers == (("message-type", b"storelens.v1.TrackAttributes"),) for x in out)
    assert [(s.track_id, s.n_faces, s.final) for s in (m.decode(m.TrackAttributes, x.value) for x in out)] == [
        (7, 1, False), (7, 2, False)]
    assert track_open(stage), "the stray frame ended the camera's open track"


# -- the faust analytics service (its own Kafka reader, the same runner core) ----------------------------------


def test_the_analytics_service_dead_letters_a_wrong_type_and_sends_typed_outputs(env, monkeypatch):  # noqa: F811
    """``services/analytics/main.py`` (faust) hands each record's headers to the runner core: a Frame on
    ``tracks`` is a dead letter naming both types, header-less frames are still counted, and what it publishes
    (crossings, dead letters) carries its type header."""
    from test_analytics_app import ServiceProc, free_port, http_get, metric, phase1_frames, wait_until

    from storelens.runtime.kafka import consume_all

    repo = str(pathlib.Path(__file__).resolve().parents[1])  # the service subprocess runs this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    cam, kafka, live = env["cam"], env["kafka"], env["live"]
    key, tracks = topics.camera_key(cam), kafka.name(topics.TRACKS)
    proc = ServiceProc(env["config_path"], env["tmp"] / "analytics.log", free_port())
    try:
        proc.wait_ready()
        frames = phase1_frames(cam)  # two crossings: track 7 over door, track 8 over side
        stray = m.Frame(camera_id=cam, seq=13, ts_ms=frames[-1].ts_ms + 100, jpeg=b"\xff\xd8", width=640,
                        height=480, source_frame=14)
        for i, tf in enumerate(frames):
            headers = () if i % 2 else m.type_headers(tf)  # every other one as an older producer sends it
            kafka.producer.publish_wait(tracks, key, m.encode(tf), timeout_s=30, headers=headers)
            if i == 5:
                kafka.producer.publish_wait(tracks, key, m.encode(stray), timeout_s=30, headers=m.type_headers(stray))
        wait_until("the last frame in Redis", lambda: live.last_seen(cam) == frames[-1].ts_ms, proc=proc)
        wait_until("a dead letter", lambda: consume_all(kafka.cfg, kafka.name(topics.DEAD_LETTER)), proc=proc)
        [letter] = [x for x in consume_all(kafka.cfg, kafka.name(topics.DEAD_LETTER)) if x.key == key]
        dl = m.decode(m.DeadLetter, letter.value)
        assert dl.reason == ("wrong message type: storelens.v1.Frame, where storelens.v1.TrackedFrame is expected "
                             "(header message-type)")
        assert dl.payload == m.encode(stray) and dl.source_topic == tracks and dl.service == "analytics"
        assert letter.headers == (("message-type", b"storelens.v1.DeadLetter"),)
        crossings = [x for x in consume_all(kafka.cfg, kafka.name(topics.CROSSINGS)) if x.key == key]
        assert len(crossings) == 2
        assert all(x.headers == (("message-type", b"storelens.v1.LineCrossing"),) for x in crossings)
        status, text = http_get(proc.port, "/metrics")
        assert status == 200 and metric(text, "storelens_errors_total", reason="message_type") == 1
        assert metric(text, "storelens_dead_letters_total", topic=tracks) == 1
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.stop()
