"""Runtime review, ninth batch.

* chain-rollup's ``/readyz`` says not ready while its history store rejects writes (retried): its ``storage`` check
  is the history sink's last write AND the store's ping. Before, the ping's check of the same name replaced the
  sink's, and it was refreshed only between messages, never while the sink retried: ready through a whole outage.
* The embedded faces stage dead-letters a crop that makes a model raise, as the attributes and reid services do
  (before: ``on_error = "stop"`` ended the whole run), and such a crop leaves nothing in the attributes' tracks
  (the face is analysed before either sub-stage changes, reid runs before attributes). The models are the real
  ones; the one that raises is the real detector or embedder made to fail on one crop (no real input was found
  that makes them raise: tiny, flat and extreme-aspect JPEGs all pass).
* A stop (SIGTERM) while the broker is away ends within ONE shutdown budget (``SHUTDOWN_FLUSH_S``), not one per
  flush: every flush and publish of the stop shares one deadline, and once one gave up the later ones do not wait
  (what is left stays undelivered and uncommitted). Before, attributes/reid waited a budget at the revoke's commit
  and again at the final flush, detect-track a third time for its snapshot at ``hooks.close()``. A private Kafka
  broker of the test's own (free ports, data under ``tmp_path``) is killed: the shared stack's broker is untouched.
"""
from __future__ import annotations

import base64
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
import uuid

import httpx
import pytest

from storelens.config import KafkaConfig, parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime import kafka, workers
from storelens.runtime.localdeploy import KAFKA, free_port
from storelens.runtime.service import ServiceRuntime
from storelens.stages.base import Outputs, Publish, decode_input
from test_runtime_readiness import _wait

REPO = pathlib.Path(__file__).resolve().parents[1]
#: The broker's jars (scripts/stack.sh resolves them; a git worktree can name its main checkout's).
KAFKA_LIBS = pathlib.Path(os.environ.get("STORELENS_KAFKA_LIBS", REPO / "infra" / "kafka" / "target" / "libs"))


def drained(outs, topic: str, cls) -> list:
    """Every message waiting on ``outs[topic]`` (a local consumer), decoded as ``cls``."""
    got = []
    while (msg := outs[topic].poll(0)) is not None:
        got.append(m.decode(cls, msg.value))
    return got


def publish_crops(bus, crops: list, end_ts_ms: int) -> None:
    """Camera ``door``'s person crops ``(seq, ts_ms, track_id, image)`` (JPEG, box at (100, 50)) on ``bus``'s
    ``person-crops``, then its end of stream at ``end_ts_ms`` and the topic's end."""
    import cv2

    from storelens.runtime.transports import END_OF_TOPIC

    for seq, ts_ms, track_id, img in crops:
        ok, buf = cv2.imencode(".jpg", img)
        h, w = img.shape[:2]
        crop = m.PersonCrop(camera_id="door", seq=seq, ts_ms=ts_ms, track_id=track_id, jpeg=buf.tobytes(),
                            bbox_xyxy=m.BoxXYXY(x1=100, y1=50, x2=100 + w, y2=50 + h))
        bus.publish(topics.PERSON_CROPS, b"door", m.encode(crop), headers=m.type_headers(crop))
    end = m.PersonCrop(camera_id="door", seq=len(crops) + 1, ts_ms=end_ts_ms, end_of_stream=True)
    bus.publish(topics.PERSON_CROPS, b"door", m.encode(end), headers=m.type_headers(end))
    bus.publish(topics.PERSON_CROPS, b"", END_OF_TOPIC)


class PrivateBroker:
    """A single-node Kafka (KRaft) of this test only: the stack's server.properties on free ports, its data under
    ``tmp``; :meth:`kill` is the outage (SIGKILL)."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.port, cport = free_port(), free_port()
        props = (REPO / "infra" / "kafka" / "server.properties").read_text()
        props = props.replace("19092", str(self.port)).replace("19093", str(cport))
        props = props.replace("@KAFKA_DATA_DIR@", str(tmp / "data"))
        (tmp / "server.properties").write_text(props)
        self.java = ["java", "-Djava.awt.headless=true", f"-Dkafka.logs.dir={tmp / 'logs'}",
                     f"-Dlog4j2.configurationFile={REPO / 'infra' / 'kafka' / 'log4j2.properties'}",
                     "-cp", f"{KAFKA_LIBS}/*"]
        cluster_id = "-"
        while cluster_id.startswith("-"):  # (one starting with "-" is taken for an option: Kafka's own never does)
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        subprocess.run(self.java + ["kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id,
                                    "-c", str(tmp / "server.properties")], check=True, capture_output=True, timeout=120)
        self.proc = subprocess.Popen(["java", "-Xmx256m", "-Xms128m", "-XX:+UseSerialGC", *self.java[1:],
                                      "kafka.Kafka", str(tmp / "server.properties")], cwd=tmp,
                                     stdout=(tmp / "kafka.out").open("w"), stderr=subprocess.STDOUT)
        self.bootstrap = f"127.0.0.1:{self.port}"
        probe = kafka.BrokerProbe(KafkaConfig(bootstrap_servers=self.bootstrap))
        try:
            _wait(lambda: self.proc.poll() is not None or probe(3), 120, "the private broker answers", 0.5)
            assert self.proc.poll() is None, (tmp / "kafka.out").read_text()[-3000:]
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


needs_java = pytest.mark.skipif(not (KAFKA_LIBS / ".resolved").exists() or shutil.which("java") is None,
                                reason=f"no Kafka jars in {KAFKA_LIBS} or no java (scripts/stack.sh up)")


class Relay:
    """frames -> tracks, one TrackedFrame per frame; holds at frame ``hold_seq`` until :attr:`release` (so the test
    can take the broker away while the worker is mid-stream). Has detect-track's snapshot hooks' methods."""

    inputs = {topics.FRAMES: m.Frame}
    outputs = (topics.TRACKS,)
    on_error = "dead_letter"

    def __init__(self, name: str, cameras: set[str], hold_seq: int) -> None:
        self.name, self.cameras, self.hold_seq = name, cameras, hold_seq
        self.held, self.release = threading.Event(), threading.Event()

    def decode(self, topic, value):
        return decode_input(self, topic, value)

    def handle(self, topic, frame):
        if frame.seq == self.hold_seq:
            self.held.set()
            self.release.wait(120)
        return Outputs(publish=[Publish(topics.TRACKS, frame.camera_id,
                                        m.TrackedFrame(camera_id=frame.camera_id, seq=frame.seq, ts_ms=frame.ts_ms))])

    def camera_snapshot(self, cam: str) -> bytes:
        return b"state"

    def restore_camera(self, cam: str, data: bytes):
        return None


@needs_java
@pytest.mark.timeout(300)
def test_a_stop_while_the_broker_is_away_takes_one_shutdown_budget_not_one_per_flush(tmp_path, monkeypatch, caplog):
    budget_s = 6.0
    monkeypatch.setattr(kafka, "SHUTDOWN_FLUSH_S", budget_s)
    monkeypatch.setattr(kafka, "FLUSH_SLICE_S", 1.0)
    broker = PrivateBroker(tmp_path)
    runs: dict[str, dict] = {}
    try:
        cfg = KafkaConfig(bootstrap_servers=broker.bootstrap, partitions=1, group_prefix="review9",
                          topic_prefix="review9.")
        config = parse_config({"store": {"id": "review9"}, "cameras": [{"id": "cam-a", "source": "x.mp4"}],
                               "kafka": cfg.model_dump()})
        kafka.ensure_topics(cfg)
        bus = kafka.KafkaBus(cfg, "test")
        for seq in range(5):
            bus.publish(topics.topic_name(topics.FRAMES, cfg.topic_prefix), b"cam-a",
                        m.encode(m.Frame(camera_id="cam-a", seq=seq, ts_ms=1000 + seq)))
        bus.close(30)
        for kind in ("attributes", "detect-track"):  # a plain worker (attributes, reid), and one with snapshots
            stage = Relay(f"relay-{kind}", {"cam-a"}, hold_seq=3)
            rt = ServiceRuntime(kind, port=0)
            worker = (workers.detect_track_worker(config, rt, stage, snapshot_every=10**6) if kind == "detect-track"
                      else workers.StageWorker(config, rt, stage))
            run = runs[kind] = {"stage": stage, "rt": rt, "worker": worker}

            def go(run=run) -> None:
                try:
                    run["code"] = run["worker"].run()
                except BaseException as exc:  # noqa: BLE001 (asserted below: aiokafka's CancelledError was one)
                    run["error"] = exc
                run["ended"] = time.monotonic()

            run["thread"] = threading.Thread(target=go, daemon=True)
            run["thread"].start()
        for run in runs.values():
            _wait(run["stage"].held.is_set, 120, "the worker holds at frame 3")
        broker.kill()  # the outage: frame 3's output cannot be delivered
        caplog.set_level(logging.INFO)
        t0 = time.monotonic()
        for run in runs.values():
            run["rt"].stopping.set()  # SIGTERM
            run["stage"].release.set()
        for run in runs.values():
            run["thread"].join(4 * budget_s + 120)
            assert not run["thread"].is_alive()
        took = {kind: round(run["ended"] - t0, 1) for kind, run in runs.items()}
        for kind, run in runs.items():  # (before: 2 and 3 budgets; or a crash in aiokafka's consumer stop)
            assert "error" not in run, f"{kind}: the stop raised {run['error']!r}"
            assert run["code"] == 1, f"{kind}: exit code {run['code']}"  # the output left undelivered is said
            assert took[kind] < 2 * budget_s, f"{kind}: the stop took {took[kind]} s, past one budget ({budget_s} s)"
        skipped = [r for r in caplog.records if "not waited for" in str(getattr(r, "error", ""))]
        assert skipped, "no later flush of the stop was skipped"
    finally:
        broker.kill()
        for run in runs.values():
            _drop_producer(run["worker"].transport.bus)


def _drop_producer(bus) -> None:
    """Stop the producer of a bus whose broker is gone without waiting for its batches (the process' exit would,
    10 s; in the test process it would go on trying to reach the broker)."""
    import asyncio
    import contextlib

    async def drop() -> None:
        kafka._open.discard(bus)
        producer = bus._producer
        producer._closed = True
        if producer._sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await producer._sender.close()
        await producer.client.close()
    kafka._run(drop(), 30)


def _readyz(port: int) -> tuple[int, dict]:
    r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    return r.status_code, r.json()


@pytest.mark.timeout(180)
def test_chain_rollup_is_not_ready_while_its_history_rejects_writes_though_it_answers_pings(tmp_path):
    import sqlite3

    from storelens.stages.rollup import ChainRollupStage
    from storelens.storage import SqliteStorage
    from storelens.storage.rollup import chain_stores

    ns = "r9" + uuid.uuid4().hex[:8]
    db = tmp_path / "chain.sqlite"
    config = parse_config({
        "store": {"id": "chain"}, "cameras": [], "privacy": {"k_min": 1},
        "chain": {"topic_pattern": rf"^{ns}-[a-z0-9-]+\.store-kpis$", "metadata_refresh_s": 1},
        "storage": {"backend": "sqlite", "path": str(db)},
        "kafka": {"bootstrap_servers": KAFKA, "topic_prefix": f"{ns}.", "group_prefix": ns, "partitions": 1}})
    store_cfg = KafkaConfig(bootstrap_servers=KAFKA, topic_prefix=f"{ns}-s1.", partitions=1)
    kafka.ensure_topics(store_cfg, [s for s in topics.TOPICS if s.name == topics.STORE_KPIS])
    storage = SqliteStorage(str(db), connect_timeout_s=1.0)  # a locked file: a write fails after 1 s (retried)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    rt = ServiceRuntime("chain-rollup", port=free_port(), host="127.0.0.1")
    rt.start()
    thread = lock = None
    try:
        worker = workers.chain_rollup_worker(config, rt, ChainRollupStage(config), storage)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        _wait(lambda: worker.transport.consumers[-1].assigned and _readyz(rt.port)[0] == 200, 60,
              "ready, the store's topic assigned", 0.2)
        lock = sqlite3.connect(str(db), isolation_level=None)  # another writer holds the file: writes are refused
        lock.execute("BEGIN EXCLUSIVE")
        assert lock.execute("SELECT 1").fetchone() == (1,)
        hour = m.StoreKpiHour(store_id="s1", start_ms=0, end_ms=3_600_000, day="1970-01-01",
                              label="1970-01-01T00:00+00:00", hours=1.0, visitors=4, computed_ms=1)
        bus = kafka.KafkaBus(store_cfg, "test")
        bus.publish(topics.topic_name(topics.STORE_KPIS, store_cfg.topic_prefix), b"s1", m.encode(hour),
                    headers=m.type_headers(hour))
        bus.close(30)
        _wait(lambda: worker.core.errors.get("storage", 0) >= 2, 60, "the sink's write failed and is retried")
        code, doc = _readyz(rt.port)
        assert code == 503 and doc["checks"]["storage"] is False, doc
        assert storage.ping()  # the store answers: only its writes fail
        lock.execute("ROLLBACK")
        lock.close()
        lock = None
        _wait(lambda: _readyz(rt.port)[0] == 200, 60, "ready again once the write went through", 0.2)
        reader = SqliteStorage(str(db))
        try:
            assert [s.store_id for s in chain_stores(reader)] == ["s1"]
        finally:
            reader.close()
    finally:
        if lock is not None:
            lock.close()
        rt.stopping.set()
        if thread is not None:
            thread.join(90)
        rt.stop()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        storage.close()
        admin = kafka.KafkaAdmin(store_cfg)
        try:
            admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(ns)])
        finally:
            admin.close()


class _BrokenOn:
    """Makes a real model raise on images ``width`` pixels wide (one odd crop)."""

    def __init__(self, model, method: str, width: int) -> None:
        self.model, self.method, self.width = model, method, width

    def __getattr__(self, name):
        real = getattr(self.model, name)
        if name != self.method:
            return real

        def broken(image_bgr, *args, **kwargs):
            if image_bgr.shape[1] == self.width:
                raise RuntimeError(f"{self.method} failed on this crop")
            return real(image_bgr, *args, **kwargs)
        return broken


@pytest.fixture(scope="module")
def face_models(tmp_path_factory):
    from types import SimpleNamespace

    from storelens.backends.face_embedders import DlibFaceEmbedder
    from storelens.paths import asset
    from storelens.stages.faces import AttributesStage

    if not asset("faces", "identities").is_dir():
        pytest.skip("shared face assets not found")
    attributes = AttributesStage(_faces_site(tmp_path_factory.mktemp("models")))
    return SimpleNamespace(detector=attributes.finder.detector, analyzer=attributes.analyzer,
                           embedder=DlibFaceEmbedder())


def _faces_site(tmp):
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
                         "storage": {"path": str(tmp / "h.db")},
                         "faces": {"enabled": True, "reid": {"faces_per_decision": 2}}})


@pytest.mark.parametrize("broken", ["detector", "embedder"])
def test_the_embedded_faces_stage_dead_letters_a_crop_a_model_fails_on_and_keeps_nothing_of_it(
        tmp_path, face_models, broken):
    import cv2

    from storelens.backends.face_index import FaceGallery
    from storelens.paths import asset
    from storelens.runtime.bus import InProcessBus
    from storelens.runtime.runner import Runner, RunnerCore
    from storelens.runtime.transports import InProcessTransport
    from storelens.stages.faces import AttributesStage, FacesStage, ReidStage
    from storelens.storage.gallery import SqlGalleryStore

    cfg = _faces_site(tmp_path)
    obama = cv2.imread(str(asset("faces", "identities", "obama", "obama.jpg")))
    odd = cv2.resize(cv2.imread(str(asset("faces", "identities", "obama", "obama2.jpg"))), (301, 301))
    detector = _BrokenOn(face_models.detector, "detect", 301) if broken == "detector" else face_models.detector
    embedder = _BrokenOn(face_models.embedder, "embed", 301) if broken == "embedder" else face_models.embedder
    gallery = FaceGallery(cfg.faces.gallery, store=SqlGalleryStore(tmp_path / "gallery.db", dim=128))
    stage = FacesStage(AttributesStage(cfg, analyzer=face_models.analyzer, detector=detector),
                       ReidStage(cfg, gallery, embedder=embedder, detector=detector))
    bus = InProcessBus()
    transport = InProcessTransport(bus, [topics.PERSON_CROPS], ending=[topics.PERSON_CROPS])
    outs = {t: bus.subscribe(t) for t in (topics.TRACK_ATTRIBUTES, topics.CUSTOMER_MATCHES, topics.DEAD_LETTER)}
    t0 = 1_767_225_600_000
    # one track; its second crop makes the model raise
    publish_crops(bus, [(seq, t0 + 100 * seq, 7, img) for seq, img in enumerate([obama, odd, obama], 1)], t0 + 400)
    core = RunnerCore(stage)
    try:
        assert Runner(core, transport).run() is None  # the run went on (before: stopped at the second crop)
    finally:
        gallery.store.close()

    letters = drained(outs, topics.DEAD_LETTER, m.DeadLetter)
    assert core.dead_letters == 1 and len(letters) == 1 and "failed on this crop" in letters[0].reason
    assert m.decode(m.PersonCrop, letters[0].payload).seq == 2
    final = [x for x in drained(outs, topics.TRACK_ATTRIBUTES, m.TrackAttributes) if x.final]
    assert [(x.track_id, x.n_faces) for x in final] == [(7, 2)]  # the failed crop's face is not in the summary
    assert stage.attributes.stats["crops"] == 2
    matches = drained(outs, topics.CUSTOMER_MATCHES, m.CustomerMatch)
    assert [(x.track_id, x.n_faces) for x in matches] == [(7, 2)]
