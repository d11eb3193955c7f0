"""Runtime follow-ups of the ninth batch (b).

* Reid runs its models (face, quality gate, embedder) before it changes anything: a crop whose embedding fails is
  a dead letter that changed nothing, and the decision of a track its arrival would have ended (idle) is taken
  with a later crop and published. Before, the idle track was decided first (the customer enrolled in the
  gallery, the decision stored) and its ``CustomerMatch`` dropped with the failing crop's output, never published
  again: a gallery customer without a ``customer_matches`` row. In the embedded faces stage and the reid service.
* At a stop, a flush or publish that ran out of the caller's OWN shorter ``timeout_s`` does not make the stop's
  later waits give up at once: only a wait the stop's deadline (``SHUTDOWN_FLUSH_S``) ended does. Before, any
  timeout during the stop did, and the rest of the stop's ~60 s was not waited for (e.g. ingest's final flush). A
  private Kafka broker of the test's own is killed and started again (the shared stack's broker is untouched).
"""
from __future__ import annotations

import subprocess
import threading

import pytest

from storelens.config import KafkaConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime import kafka
from test_runtime_review_9 import (_BrokenOn, PrivateBroker, _drop_producer, _faces_site, _wait, drained,  # noqa: F401
                                   face_models, needs_java, publish_crops)

# -- 1. reid's embedding before its state changes ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["embedded faces stage", "reid service"])
def test_a_crop_whose_embedding_fails_does_not_lose_the_decision_of_the_track_it_ends(
        tmp_path, face_models, kind):  # noqa: F811
    """Track 7 has one good face (undecided: two make a decision). A crop of track 8 comes after track 7's idle
    time and makes the real embedder raise: it is a dead letter, and track 7's CustomerMatch is published (at the
    end of the stream; before: never, though the customer was enrolled)."""
    import cv2

    from storelens.backends.face_index import FaceGallery
    from storelens.paths import asset
    from storelens.runtime.bus import InProcessBus
    from storelens.runtime.runner import Runner, RunnerCore
    from storelens.runtime.transports import InProcessTransport
    from storelens.stages.faces import AttributesStage, FacesStage, ReidStage, idle_ms
    from storelens.storage.gallery import SqlGalleryStore

    cfg = _faces_site(tmp_path)
    obama = cv2.imread(str(asset("faces", "identities", "obama", "obama.jpg")))
    odd = cv2.resize(cv2.imread(str(asset("faces", "identities", "obama", "obama2.jpg"))), (301, 301))
    embedder = _BrokenOn(face_models.embedder, "embed", 301)
    gallery = FaceGallery(cfg.faces.gallery, store=SqlGalleryStore(tmp_path / "gallery.db", dim=128))
    reid = ReidStage(cfg, gallery, embedder=embedder, detector=face_models.detector)
    stage = reid if kind == "reid service" else FacesStage(
        AttributesStage(cfg, analyzer=face_models.analyzer, detector=face_models.detector), reid)
    bus = InProcessBus()
    transport = InProcessTransport(bus, [topics.PERSON_CROPS], ending=[topics.PERSON_CROPS])
    outs = {t: bus.subscribe(t) for t in (topics.CUSTOMER_MATCHES, topics.DEAD_LETTER)}
    t0 = 1_767_225_600_000
    late = t0 + 100 + idle_ms(reid.site, "door") + 1000  # track 7 is idle by then
    publish_crops(bus, [(1, t0 + 100, 7, obama), (2, late, 8, odd)], late + 100)
    core = RunnerCore(stage)
    try:
        assert Runner(core, transport).run() is None
        enrolled = [cid for cid, _ in gallery.store.customers()]
    finally:
        gallery.store.close()

    letters = drained(outs, topics.DEAD_LETTER, m.DeadLetter)
    assert [m.decode(m.PersonCrop, x.payload).seq for x in letters] == [2]
    assert "failed on this crop" in letters[0].reason
    matches = drained(outs, topics.CUSTOMER_MATCHES, m.CustomerMatch)
    assert [(x.track_id, x.n_faces, x.is_new) for x in matches] == [(7, 1, True)]  # before: [] (lost)
    assert enrolled == [matches[0].customer_id]


# -- 2. a caller's own short timeout at the stop -------------------------------------------------------------------


def _start_again(broker: PrivateBroker) -> None:
    """Start the killed private broker again (same ports, same data)."""
    tmp = broker.tmp
    broker.proc = subprocess.Popen(["java", "-Xmx256m", "-Xms128m", "-XX:+UseSerialGC", *broker.java[1:],
                                    "kafka.Kafka", str(tmp / "server.properties")], cwd=tmp,
                                   stdout=(tmp / "kafka.out").open("a"), stderr=subprocess.STDOUT)
    probe = kafka.BrokerProbe(KafkaConfig(bootstrap_servers=broker.bootstrap))
    _wait(lambda: broker.proc.poll() is not None or probe(3), 120, "the private broker answers again", 0.5)
    assert broker.proc.poll() is None, (tmp / "kafka.out").read_text()[-3000:]


@needs_java
@pytest.mark.timeout(400)
def test_a_wait_that_ran_out_of_its_own_timeout_at_the_stop_leaves_the_stop_its_time(tmp_path, monkeypatch):
    """The broker is away during a stop: ``flush(timeout_s=1)`` gives up (its own limit), and so does a second one,
    which still waited (not the "not waited for" look of a stop that gave up); the broker back, a flush of the stop
    waits for it and delivers. Before: the first timeout made every later wait of the stop give up at once."""
    monkeypatch.setattr(kafka, "SHUTDOWN_FLUSH_S", 300.0)  # the stop's deadline: far (a broker restart fits in it)
    monkeypatch.setattr(kafka, "FLUSH_SLICE_S", 1.0)
    broker = PrivateBroker(tmp_path)
    stopping = threading.Event()
    bus = None
    try:
        cfg = KafkaConfig(bootstrap_servers=broker.bootstrap, partitions=1, topic_prefix="f9b.")
        kafka.ensure_topics(cfg, [topics.spec(topics.FRAMES)])
        topic = topics.topic_name(topics.FRAMES, cfg.topic_prefix)
        bus = kafka.KafkaBus(cfg, "f9b", stopping=stopping.is_set)
        bus.publish(topic, b"cam", b"before")
        bus.flush()
        broker.kill()  # the outage
        bus.publish(topic, b"cam", b"during")  # taken by the producer, not delivered
        stopping.set()  # SIGTERM
        for _ in range(2):
            with pytest.raises(kafka.UndeliveredError) as exc:
                bus.flush(timeout_s=1.0)
            assert "not waited for" not in str(exc.value)  # before: the second one did not wait
            assert not bus._stop_gave_up and bus.stop_left() > 1.0
        _start_again(broker)
        bus.flush()  # the stop's wait goes on until the broker takes it (before: one look, UndeliveredError)
        got = [v for _, v, _ in kafka.read_to_end(cfg, topic)]
        assert got == [b"before", b"during"]
        bus.close(30)
        bus = None
    finally:
        broker.kill()
        if bus is not None:
            _drop_producer(bus)
